"""The HTML report in a real headless Chromium, driven over plain HTTP WebDriver calls to chromedriver.

The report comes from a real run (``stillroom.runs.execute`` over the toy plugin and report_components.py)
sized like the quickstart: 300 test items, 8 entries. Loopback only; the browser gets a fresh profile and no
network features, and every process this test starts is killed by PID at the end. Skipped where Debian's
``chromium`` and ``chromium-driver`` are missing.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.request
import zlib
from pathlib import Path

import pytest

from stillroom.leaderboard import pivot
from stillroom.plugins.formats.report import html_report
from stillroom.rundir import read_jsonl
from stillroom.results import ResultsStore

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C WebDriver element reference key
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                                reason="needs /usr/bin/chromium and /usr/bin/chromedriver "
                                       "(apt-get install chromium chromium-driver)")

_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never route loopback through a proxy


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *_descendants(child)]
    return found


class WebDriver:
    """The few W3C WebDriver commands these tests need."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.session = ""

    def call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with _http.open(request, timeout=60) as response:
            return json.loads(response.read())["value"]

    def start(self, profile: Path) -> None:
        options = {"binary": str(CHROMIUM), "args": [*FLAGS, f"--user-data-dir={profile}", "--window-size=1400,1000"]}
        created = self.call("POST", "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}})
        self.session = f"/session/{created['sessionId']}"

    def open(self, path: Path) -> None:
        self.call("POST", f"{self.session}/url", {"url": path.as_uri()})

    def js(self, script: str, *args):
        return self.call("POST", f"{self.session}/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str) -> str:
        return self.call("POST", f"{self.session}/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css: str) -> None:
        self.call("POST", f"{self.session}/element/{self.find(css)}/click", {})

    def screenshot(self, css: str) -> bytes:
        return base64.b64decode(self.call("GET", f"{self.session}/element/{self.find(css)}/screenshot"))


@pytest.fixture
def browser(tmp_path):
    port = _free_port()
    driver = subprocess.Popen([str(CHROMEDRIVER), f"--port={port}", "--allowed-ips=127.0.0.1"],
                              stdout=(tmp_path / "chromedriver.log").open("w"), stderr=subprocess.STDOUT)
    web = WebDriver(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if web.call("GET", "/status")["ready"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or driver.poll() is not None:
                pytest.fail("chromedriver did not start: " + (tmp_path / "chromedriver.log").read_text()[-2000:])
            time.sleep(0.1)
        web.start(tmp_path / "profile")
        yield web
    finally:
        started = _descendants(driver.pid)  # the browser and its helpers
        if web.session:
            try:
                web.call("DELETE", web.session)
            except OSError:
                pass
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait()
        for pid in started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def png_colours(data: bytes) -> int:
    """How many distinct byte values the decoded pixel rows of a PNG hold (1-2 for a blank image)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, pixels = 8, b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        if kind == b"IDAT":
            pixels += data[position + 8:position + 8 + length]
        position += 12 + length
    return len(set(zlib.decompress(pixels)))


@pytest.fixture
def quickstart_sized(stillroom_env):
    """A finished run the size of the quickstart's with three seeds: teacher, base and 6 method entries x 3 seeds
    on 300 items, two evaluators (one more than the quickstart's, so the page is larger than its)."""
    from report_components import REPORT_SPEC, reportkit
    from toy_components import toy

    from stillroom.plugin_manager import make_host, use_host
    from stillroom.runs import execute

    from stillroom.plugins import formats

    host = make_host(modules={"toy": toy, "reportkit": reportkit, "formats": formats}, entry_points=False)
    previous = use_host(host)
    extra = "".join(f'\n[[methods]]\nkind = "memorise"\nlabel = "share{k}"\nshare = 0.{k}\n' for k in (2, 4, 6))
    spec = stillroom_env / "rep.toml"
    spec.write_text(REPORT_SPEC.replace('kind = "number_words"', 'kind = "number_words"\nsize = 300\nwordy = true')
                    .replace("[[evaluators]]", extra + "\n[[evaluators]]", 1).format(seeds="seeds = [0, 1, 2]"))
    try:
        run = execute(spec, host=host)
    finally:
        use_host(previous)
    with ResultsStore.default() as store:
        rows = store.rows(run_id=run.id, latest=False)
    return run.dir.root / "report.html", rows


CHART_CHECK = """return Array.from(document.querySelectorAll('svg.chart')).map(svg => {
    const frame = svg.getBoundingClientRect();
    const outside = Array.from(svg.querySelectorAll('text')).filter(t => {
        const r = t.getBoundingClientRect();
        return r.left < frame.left - 0.5 || r.right > frame.right + 0.5 || r.top < frame.top - 0.5
            || r.bottom > frame.bottom + 0.5 || r.width === 0;
    }).map(t => t.textContent);
    return {label: svg.getAttribute('aria-label'), section: svg.closest('section').id, outside: outside,
            ticks: Array.from(svg.querySelectorAll('text.tick')).map(t => t.textContent),
            yticks: Array.from(svg.querySelectorAll('text.tick.y')).map(t => t.textContent),
            series: Array.from(svg.querySelectorAll('g.series')).map(g => Number(g.dataset.points)),
            bars: Array.from(svg.querySelectorAll('rect.bar')).map(r => r.getBBox().width)};
})"""


def test_report_of_a_run_in_chromium(browser, quickstart_sized, tmp_path):
    path, rows = quickstart_sized
    entries = pivot(rows)
    names = [e["entry"] for e in entries]  # one run: the page names entries by their labels
    assert len(names) == 8 and path.stat().st_size <= 2_000_000

    # opening time as a reader sees it: the browser is running (a blank page loaded), the report is opened once
    browser.call("POST", f"{browser.session}/url", {"url": "about:blank"})
    started = time.perf_counter()
    browser.open(path)  # returns once the page has loaded
    opened = time.perf_counter() - started
    timing = browser.js("const n = performance.getEntriesByType('navigation')[0];"
                        "return {load: n.loadEventEnd - n.startTime, ready: window.reportReady}")
    assert timing["ready"] is not None, "the report script stopped before its end"
    assert timing["load"] < 1000 and opened < 1.0, (timing, opened)  # measured ~0.1-0.5 s on 2 busy cores
    # nothing fetched: a Content-Security-Policy that allows no source, and no resource loaded
    assert browser.js("return document.querySelector('meta[http-equiv=Content-Security-Policy]').content") \
        .startswith("default-src 'none'")
    assert browser.js("return performance.getEntriesByType('resource').map(r => r.name)") == []

    # the pivot: one row per entry, each once
    shown = browser.js("return Array.from(document.querySelectorAll('#pivot tbody tr')).map(r => r.dataset.entry)")
    assert sorted(shown) == sorted(names) and len(set(shown)) == len(shown)

    # sorting both ways, numbers and text
    column = browser.js("return Array.from(document.querySelectorAll('#pivot th'))"
                        ".findIndex(th => th.dataset.metric === 'recall/acc')") + 1
    assert column > 1
    values = ("return Array.from(document.querySelectorAll('#pivot tbody tr'))"
              ".map(r => r.cells[arguments[0]].dataset.value)")
    browser.click(f"#pivot th:nth-child({column})")
    ascending = [float(v) for v in browser.js(values, column - 1)]
    expected = sorted(e["metrics"]["recall/acc"]["value"] for e in entries)
    assert ascending == pytest.approx(expected) and ascending[0] < ascending[-1]
    browser.click(f"#pivot th:nth-child({column})")
    assert [float(v) for v in browser.js(values, column - 1)] == pytest.approx(expected[::-1])
    browser.click("#pivot th:nth-child(1)")
    assert browser.js(values, 0) == sorted(names)
    browser.click("#pivot th:nth-child(1)")
    assert browser.js(values, 0) == sorted(names, reverse=True)

    # the drill-down shows the chosen entry's prediction for a chosen item, and every other entry's
    def samples_of(model, evaluator="recall", metric="acc"):
        cell = next(e for e in entries if e["entry"] == model)["metrics"][f"{evaluator}/{metric}"]
        return {str(r["id"]): r for r in read_jsonl(cell["samples_path"])}

    choose = ("const s = document.getElementById(arguments[0]); s.value = arguments[1];"
              "s.dispatchEvent(new Event('change')); return s.value")
    assert browser.js(choose, "drill-entry", "share2") == "share2"
    assert browser.js(choose, "drill-benchmark", "recall") == "recall"
    mine = samples_of("share2")
    wrong = next(key for key, record in mine.items() if not record["correct"])
    right = next(key for key, record in mine.items() if record["correct"])
    row = ("const r = document.querySelector(`#drill-rows tr.item[data-id='${arguments[0]}']`);"
           "return Array.from(r.cells).map(c => c.textContent)")
    assert browser.js(row, right) == [right, mine[right]["prompt"], mine[right]["reference"], mine[right]["prediction"], "1"]
    assert browser.js(row, wrong)[3:] == [mine[wrong]["prediction"], "0"] and mine[wrong]["prediction"] == ""
    browser.click(f"#drill-rows tr.item[data-id='{wrong}']")
    others = browser.js("return Object.fromEntries(Array.from(document.querySelectorAll('#drill-rows table.others tr'))"
                        ".map(r => [r.dataset.entry, r.cells[1].textContent]))")
    assert others == {name: samples_of(name)[wrong]["prediction"] for name in names}
    # only the items where it disagrees with the reference
    assert browser.js(choose, "drill-other", "half") == "half"
    browser.click("#drill-disagree")
    theirs = samples_of("half")
    differ = sorted(k for k in mine if mine[k]["correct"] != theirs[k]["correct"])
    assert 0 < len(differ) < len(mine)
    assert browser.js("return Array.from(document.querySelectorAll('#drill-rows tr.item')).map(r => r.dataset.id)") \
        == differ

    # charts: every label inside its chart, every series with data, no chart without any
    charts = browser.js(CHART_CHECK)
    assert [c for c in charts if c["outside"]] == []
    assert all(c["series"] and all(n > 0 for n in c["series"]) or c["bars"] and all(w > 0 for w in c["bars"])
               for c in charts), charts
    by_label = {c["label"]: c for c in charts}
    curves = [c for c in charts if c["section"] == "curves"]
    assert sorted(c["label"] for c in curves) == sorted(n for n in names if n not in ("teacher", "base"))
    assert {"pool sizes", "hard fraction", "mean d (teacher - student)", "held-out score",
            "pseudo-target mix (optimizer steps)"} <= set(by_label)
    assert not any("calls" in c["label"] or "cost" == c["label"] for c in charts)  # zero everywhere: no chart
    assert by_label["mean d (teacher - student)"]["yticks"][-1].endswith("k")  # compact SI, not ".75e+03"
    assert not any(t.startswith(".") or "e+" in t for c in charts for t in c["ticks"])
    assert [c for c in charts if c["section"] == "cost"]

    # one screenshot per section, each with something drawn on it
    for section in browser.js("return Array.from(document.querySelectorAll('section')).map(s => s.id)"):
        image = browser.screenshot(f"#{section}")
        (tmp_path / f"section-{section}.png").write_bytes(image)
        assert len(image) > 3000 and png_colours(image) > 20, section


def test_report_of_an_old_store_in_chromium(browser, tmp_path):
    """Rows without seeds, verdicts, per-sample records or run folders (an older store) still make a page."""
    with ResultsStore(tmp_path / "board.sqlite") as store:
        store.add_run("r1", "demo")
        for subject, accuracy in (("teacher", 0.82), ("base", 0.31), ("sft", 0.55), ("gkd", 0.64)):
            role = subject if subject in ("teacher", "base") else "method"
            model_id = store.add_model("r1", f"demo/{subject}", role, method=None if role != "method" else subject)
            store.add_result("r1", model_id, "em", "accuracy", accuracy, n=200, stderr=0.03)
        store.add_run("r2", "demo")  # sft again: the latest rows come from two runs
        store.add_result("r2", store.add_model("r2", "demo/sft", "method", method="sft"), "em", "accuracy", 0.57, n=200)
        rows = store.rows()
    assert {r["run_id"] for r in rows} == {"r1", "r2"}
    path = tmp_path / "report.html"
    path.write_text(html_report(rows))
    browser.open(path)
    assert browser.js("return window.reportReady") is not None
    assert browser.js("return Array.from(document.querySelectorAll('section')).map(s => s.id)") == \
        ["leaderboard", "lineage"]
    assert sorted(browser.js("return Array.from(document.querySelectorAll('#pivot tbody tr'))"
                             ".map(r => r.dataset.entry)")) == sorted(r["model"] for r in rows)
    assert browser.js("return document.querySelectorAll('svg').length") == 0
