"""The streaming pool behind every API call (core/calls.py with the openai endpoint), against the loopback fault
server: a run killed with -9 and run again pays for each request once; the in-flight count stays at the
concurrency while work remains and never above it; a server that allows 8 requests in flight is used at close
to that rate with no request failing; credentials written into a base_url appear nowhere."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import stillroom
from stillroom import Context, GenerationRequest, UserError
from stillroom.cache import CallCache
from stillroom.testing.fault_server import start_fault_server

STILLROOM = str(Path(sys.executable).with_name("stillroom"))
SENTINEL = "sk-URLSENTINEL-7d1e0c5a9b"


def chat(text: str, **options) -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": text}], **options)


def mean_in_flight(timeline: list[list[float]], until_arrival: int, skip_s: float = 0.0) -> float:
    """Time-weighted mean of the server's in-flight count from ``skip_s`` after the first arrival to the moment
    the ``until_arrival``-th request arrived (while the client still had requests to send)."""
    start = timeline[0][0] + skip_s
    end = next(t for t, _, arrived in timeline if arrived >= until_arrival)
    area = 0.0
    for (t, count, _), (t_next, _, _) in zip(timeline, timeline[1:]):
        lo, hi = max(t, start), min(t_next, end)
        if hi > lo:
            area += count * (hi - lo)
    return area / (end - start)


def cached_rows(cache_dir: Path) -> int:
    path = cache_dir / "calls.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not there yet
        return 0
    finally:
        db.close()


TEACHER_SCRIPT = """
import json, sys
import stillroom
from stillroom import GenerationRequest
base_url, count = sys.argv[1], int(sys.argv[2])
teacher = stillroom.build("teacher", "api", base_url=base_url, model="tiny", concurrency=4, backoff_base=0.01)
answers = teacher.generate([GenerationRequest(prompt=f"teach {i}") for i in range(count)])
print(json.dumps([a[0].text for a in answers]))
"""


@pytest.mark.parametrize("path", ["generate", "teacher"])
def test_kill_9_mid_run_then_rerun_sends_each_request_once(stillroom_env, tmp_path, path):
    """The server answers 13 of 40 requests and holds the rest; once the 13 answers are in the call cache the
    client is killed with SIGKILL (no chance to flush anything). The rerun must send exactly the other 27."""
    total, answered_first = 40, 13
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "STILLROOM_CACHE_DIR": str(cache_dir), "STILLROOM_HOME": str(stillroom_env / "home"),
           "STILLROOM_PLUGINS": "openai", "STILLROOM_NO_PROGRESS": "1"}
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"teach {i}"}) + "\n" for i in range(total)))
    out = tmp_path / "o.jsonl"
    with start_fault_server(delay_ms=10, hold_after=answered_first) as server:
        if path == "generate":
            command = [STILLROOM, "generate", "--base-url", server.base_url, "--model", "tiny", "--prompts",
                       str(prompts), "--out", str(out), "--concurrency", "4", "--set", "backoff_base=0.01"]
        else:
            command = [sys.executable, "-c", TEACHER_SCRIPT, server.base_url, str(total)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and process.poll() is None and not (
                    server.stats()["held"] == 4 and cached_rows(cache_dir) == answered_first):
                time.sleep(0.05)
            stats = server.stats()
            assert process.poll() is None, process.communicate()
            assert stats["ok"] == answered_first and stats["held"] == 4, stats  # the pool was full when killed
            assert cached_rows(cache_dir) == answered_first  # each answer was stored as it arrived
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()
        server.release()  # the held requests of the dead client are dropped, not answered
        time.sleep(0.2)
        before = server.stats()["requests"]

        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        stats = server.stats()
    assert stats["requests"] - before == total - answered_first  # only the unanswered requests were sent
    assert stats["answered_distinct"] == total and stats["answered_again"] == 0
    if path == "generate":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["completions"] for r in rows] == [[f"echo: teach {i}"] for i in range(total)]
        assert f"{answered_first} from the cache" in done.stderr
    else:
        assert json.loads(done.stdout) == [f"echo: teach {i}" for i in range(total)]


def test_in_flight_stays_at_the_concurrency_under_heavy_tailed_latency(stillroom_host, tmp_path):
    """No chunk barriers: while requests remain to be sent, the server sees `concurrency` of them in flight
    (a slow answer holds one slot, not the whole pool), and never more; every answer reaches the cache."""
    concurrency, total = 8, 160
    with start_fault_server(latency_median_ms=40, latency_p99_ms=600, seed=1) as server:
        cache = CallCache(tmp_path / "calls.sqlite")
        api = stillroom.build("endpoint", "openai", context=Context(cache=cache, progress=False),
                              base_url=server.base_url, model="tiny", concurrency=concurrency)
        answers = api.generate([chat(f"question {i}") for i in range(total)])
        stats, timeline = server.stats(), server.timeline()
    assert [a[0].text for a in answers] == [f"echo: question {i}" for i in range(total)]
    assert stats["max_in_flight"] == concurrency and stats["requests"] == total
    mean = mean_in_flight(timeline, until_arrival=total)
    # a client turnaround of a few ms per answer costs a little; a barrier per chunk costs most of the pool
    assert mean >= 0.75 * concurrency, mean  # chunks of 4 x concurrency gave 3.8 of 8 here
    assert cache.stats()["entries"] == total
    cache.close()


def test_rate_limited_server_is_used_at_its_allowed_rate(stillroom_host):
    """At most 8 in flight, 429 (Retry-After 50 ms) beyond: the adaptive limit settles near 8, throughput is
    within 20% of 8 / latency, and no request fails. (A 200 ms latency keeps the client's own turnaround, slow
    on a loaded machine, a small part of each slot's time.)"""
    allowed, latency_ms, total = 8, 200, 200
    with start_fault_server(delay_ms=latency_ms, max_in_flight=allowed, limit_retry_after="0.05") as server:
        api = stillroom.build("endpoint", "openai", context=Context(cache=None, progress=False),
                              base_url=server.base_url, model="tiny", concurrency=32, backoff_base=0.01)
        started = time.perf_counter()
        answers = api.generate([chat(f"limited {i}") for i in range(total)])
        wall = time.perf_counter() - started
        stats, timeline = server.stats(), server.timeline()
    assert [a[0].text for a in answers] == [f"echo: limited {i}" for i in range(total)]
    assert api.stats["failures"] == 0 and stats["ok"] == total and stats["limited"] > 0
    # throughput by Little's law: admitted requests in flight / latency, once the limit has settled
    settled = mean_in_flight(timeline, until_arrival=stats["requests"] - allowed, skip_s=0.5)
    assert settled >= 0.8 * allowed, (settled, stats)
    # start-up (the SDK's import, the descent from 32) and the tail included: no request sat out long backoffs
    assert total / wall >= 0.5 * allowed / (latency_ms / 1000), wall
    assert stats["limited"] < total  # it backed off instead of hammering the server


def test_requests_and_tokens_per_minute_pace_the_sends(stillroom_host, clean):
    """requests_per_minute and tokens_per_minute space sends evenly, whatever the concurrency."""
    requests = [chat(f"paced {i}", max_tokens=10) for i in range(6)]
    api = stillroom.build("endpoint", "openai", context=Context(cache=None, progress=False),
                          base_url=clean.base_url, model="tiny", concurrency=8, requests_per_minute=600)
    started = time.perf_counter()
    api.generate(requests)
    assert time.perf_counter() - started >= 0.5  # 6 sends, 5 gaps of 100 ms
    tokens = api.request_tokens(requests[0])
    api = stillroom.build("endpoint", "openai", context=Context(cache=None, progress=False),
                          base_url=clean.base_url, model="tiny", concurrency=8, tokens_per_minute=tokens * 600)
    started = time.perf_counter()
    api.generate(requests)
    assert time.perf_counter() - started >= 0.5  # each request's tokens take 100 ms of the quota


def test_credentials_in_base_url_appear_nowhere(stillroom_host, stillroom_env, tmp_path):
    """user:key@ in a base_url is sent, but is not part of the identity, the cache (keys or labels), any
    message, `cache stats`, or any file written."""
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "STILLROOM_CACHE_DIR": str(cache_dir), "STILLROOM_HOME": str(tmp_path / "home"),
           "STILLROOM_PLUGINS": "openai", "STILLROOM_NO_PROGRESS": "1"}
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"id": i, "prompt": f"secret {i}"}) + "\n" for i in range(3)))

    def generate(url: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([STILLROOM, "generate", "--base-url", url, "--model", "tiny", "--prompts",
                               str(prompts), "--out", str(tmp_path / "out.jsonl"), "--set", "backoff_base=0.001",
                               *extra], env=env, capture_output=True, text=True, timeout=120)

    with start_fault_server() as good, start_fault_server(rate_500=1.0) as failing, ThreadPoolExecutor(3) as pool:
        closed = f"http://user:{SENTINEL}@127.0.0.1:9/v1"  # nothing listens on the discard port
        futures = [pool.submit(generate, good.base_url.replace("http://", f"http://user:{SENTINEL}@")),
                   pool.submit(generate, failing.base_url.replace("http://", f"http://{SENTINEL}@"),
                               "--set", "max_retries=1"),
                   pool.submit(generate, closed, "--set", "max_retries=0")]
        ok, bad, refused = (future.result() for future in futures)
        assert good.stats()["ok"] == 3  # the credentials did not stop the requests
    stats = subprocess.run([STILLROOM, "cache", "stats"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert bad.returncode == 2 and "failed after 1 retries" in bad.stderr, bad.stderr
    assert refused.returncode == 2 and "127.0.0.1:9" in refused.stderr, refused.stderr
    assert stats.returncode == 0 and good.base_url in stats.stdout
    for result in (ok, bad, refused, stats):
        assert SENTINEL not in result.stdout + result.stderr and "Traceback" not in result.stderr
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert SENTINEL.encode() not in file.read_bytes(), file

    api = stillroom.build("endpoint", "openai", base_url=f"https://user:{SENTINEL}@api.example.invalid/v1",
                          model="m", api_key_env="NO_SUCH_KEY_VAR_H4")
    shown = [json.dumps(api.identity()), api.label, api.config.model_dump_json()]
    assert not any(SENTINEL in text for text in shown), shown
    with pytest.raises(UserError) as caught:
        stillroom.build("endpoint", "openai", base_url=f"ftp://user:{SENTINEL}@host/v1", model="m")
    assert SENTINEL not in str(caught.value)
