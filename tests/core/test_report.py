"""The HTML report's data and the `stillroom report` command, without a browser (test_report_browser.py drives
the page itself). Runs are real: ``execute`` over the toy plugin and report_components.py."""

from __future__ import annotations

import json
import math
import re

import pytest
from typer.testing import CliRunner

from stillroom.cli import app
from stillroom.roles import UserError
from stillroom.plugins.formats.report import compact, html_report, metric_columns, verdict_matrices
from stillroom.plugins.formats.report_data import method_dynamics, stage_history, training_curves
from stillroom.results import ResultsStore


def page_data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1))


@pytest.fixture
def report_host(stillroom_env):
    from report_components import reportkit
    from toy_components import toy

    from stillroom.plugin_manager import make_host, use_host

    from stillroom.plugins import formats

    host = make_host(modules={"toy": toy, "reportkit": reportkit, "formats": formats}, entry_points=False)
    previous = use_host(host)
    yield host
    use_host(previous)


def run_spec(host, folder, seeds: str = ""):
    from report_components import REPORT_SPEC

    from stillroom.runs import execute

    spec = folder / "rep.toml"
    spec.write_text(REPORT_SPEC.format(seeds=seeds))
    run = execute(spec, host=host)
    with ResultsStore.default() as store:
        return spec, run, store.rows(run_id=run.id, latest=False)


def test_compact_numbers():
    assert [compact(v) for v in (0, 0.1234, 12.0, 999.0, 1750, 2.4e12, -3.5e6, 4e-5)] == \
        ["0", "0.123", "12", "999", "1.75k", "2.4T", "-3.5M", "4.0e-05"]
    assert compact(None) == "" and compact(math.inf) == "inf" and compact(True) == "True"


def test_stage_history_reads_every_layout(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "log_history.jsonl").write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "loss": 1.5}\n')
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "log_history.json").write_text(json.dumps([{"step": 5, "loss": 1.0}, {"train_runtime": 3}]))
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "losses.json").write_text("[3.0, 2.0]")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "stage.json").write_text('{"losses": [4.0], "loss": 4.0}')
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "stage.json").write_text('{"loss": 4.0}')
    assert stage_history(tmp_path / "a") == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert stage_history(tmp_path / "b") == [{"step": 5, "loss": 1.0}, {"train_runtime": 3}]
    assert stage_history(tmp_path / "c") == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}]
    assert stage_history(tmp_path / "d") == [{"step": 1, "loss": 4.0}]
    assert stage_history(tmp_path / "e") == []


def test_curves_of_several_training_stages_share_one_step_axis(tmp_path):
    """Lion's engine continues its step count across iterations (kept); a stage that starts again at 1 follows
    the previous one; stages are read in natural order (iter2 before iter10)."""
    steps = {"iter1/train": range(1, 11), "iter2/train": range(11, 16), "iter10/train": range(1, 6)}
    for stage, numbers in steps.items():
        folder = tmp_path / "stages" / "methods" / "lion" / stage
        folder.mkdir(parents=True)
        (folder / "stage.json").write_text("{}")
        (folder / "log_history.jsonl").write_text("".join(json.dumps({"step": n, "loss": 1 / n, "eval_loss": 2.0,
                                                                      "eval_runtime": 0.1}) + "\n" for n in numbers))
    entry = {"model": "r/lion", "entry": "lion", "run_id": "r", "role": "method", "run_dir": str(tmp_path)}
    loss, held_out = training_curves([entry], ["lion"])
    assert (loss["title"], loss["series"][0]["name"]) == ("lion", "lion")
    assert [p[0] for p in loss["series"][0]["points"]] == list(range(1, 21))
    assert held_out["title"] == "lion: eval_loss" and len(held_out["series"][0]["points"]) == 20


def test_report_of_a_seeded_run(report_host, stillroom_env):
    """Two seeds: per-seed values in the pivot, one curve per seed, per-seed predictions, dynamics per seed."""
    _, run, rows = run_spec(report_host, stillroom_env, "seeds = [0, 1]")
    html = (run.dir.root / "report.html").read_text()
    data = page_data(html)
    assert data["entries"] == ["teacher", "base", "half", "most", "rounds"]
    body = html.split('<table id="pivot"', 1)[1].split("</table>", 1)[0]
    assert body.count('<tr data-entry="') == 5 and "seeds: 0.5 0.5" in body and ">0, 1<" in body
    curves = {c["title"]: [s["name"] for s in c["series"]] for c in data["curves"]}
    assert curves == {name: ["seed 0", "seed 1"] for name in ("half", "most", "rounds")}
    rounds = next(c for c in data["curves"] if c["title"] == "rounds")["series"][0]["points"]
    assert [p[0] for p in rounds] == list(range(1, 61))  # three 20-step stages, one step count
    recall = next(b for b in data["samples"]["benchmarks"] if b["key"] == "recall")
    assert set(recall["predictions"]["most"]) == {"0", "1"} and set(recall["predictions"]["teacher"]) == {"-"}
    for seed in ("0", "1"):  # the page's answers are the ones the run recorded for that seed
        path = next(r for r in rows if r["model"] == "rep/most" and r["evaluator"] == "recall")["seed_samples"][seed]
        recorded = [json.loads(line) for line in open(path)]
        assert recall["predictions"]["most"][seed] == [[r["prediction"], float(r["correct"])] for r in recorded]
    assert [i["id"] for i in recall["items"]] == [r["id"] for r in recorded] and not recall["truncated"]
    titles = {c["title"]: c for c in data["dynamics"]}
    assert set(titles) == {"pool sizes", "hard fraction", "mean d (teacher - student)", "held-out score",
                           "pseudo-target mix (optimizer steps)"}  # calls_referee and cost are 0: no chart
    assert [s["name"] for s in titles["hard fraction"]["series"]] == ["rounds seed 0", "rounds seed 1"]
    mix = titles["pseudo-target mix (optimizer steps)"]
    assert mix["categories"][0] == "rounds seed 0 iter1/train" and len(mix["categories"]) == 6
    assert [s["values"][:3] for s in mix["series"]] == [[14.0, 9.0, 4.0], [5.0, 10.0, 15.0], [1.0, 1.0, 1.0]]
    assert data["cost"]["axes"][0]["key"] == "flops_estimate" and len(data["cost"]["points"]) == 3


def test_sample_cap_is_said_on_the_page(report_host, stillroom_env):
    _, _, rows = run_spec(report_host, stillroom_env)
    html = html_report(rows, sample_cap=10)
    recall = next(b for b in page_data(html)["samples"]["benchmarks"] if b["key"] == "recall")
    assert len(recall["items"]) == 10 and recall["total"] == 40 and recall["truncated"]
    assert all(len(answers) == 10 for per_seed in recall["predictions"].values() for answers in per_seed.values())
    assert "keeps the first 10 items of each benchmark; recall, overlap have more" in html


def test_dynamics_from_store_rows_and_iteration_results():
    """Without run folders: ``extra["iterations"]`` and ``iteration/<k>/<name>`` results; malformed points and
    fields that are zero everywhere are left out."""
    entry = {"model": "lion/lion", "run_id": "r3", "role": "method", "entry": "lion", "run_dir": None}
    rows = [{"model": "lion/lion", "run_id": "r3", "evaluator": "em", "metric": f"iteration/{k}/accuracy", "value": v,
             "extra": {"iterations": [{"iteration": 1, "hard_examples": 40, "calls_teacher": 9, "zeros": 0},
                                      {"iteration": 2, "hard_examples": 25, "zeros": 0}, "junk",
                                      {"iteration": "3", "hard_examples": 1}, {"iteration": 3, "hard_examples": math.inf}]}}
            for k, v in ((1, 0.41), (2, 0.52), (3, 0.58))]
    charts = {c["title"]: c for c in method_dynamics([entry], ["lion/lion"], rows)}
    assert set(charts) == {"hard_examples", "em: accuracy"}
    assert [(s["name"], s["points"]) for s in charts["hard_examples"]["series"]] == [("lion/lion", [[1, 40.0], [2, 25.0]])]
    assert charts["em: accuracy"]["series"][0]["points"] == [[1, 0.41], [2, 0.52], [3, 0.58]]


def report_cli(*args):
    result = CliRunner().invoke(app, ["report", *args])
    if isinstance(result.exception, UserError):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_report_command(report_host, stillroom_env):
    spec, run, _ = run_spec(report_host, stillroom_env)
    written = run.dir.root / "report.html"
    written.unlink()
    assert report_cli(run.id) == str(written) and written.read_text().startswith("<!doctype html>")
    written.unlink()
    assert report_cli(str(run.dir.root)) == str(written) and written.exists()
    elsewhere = stillroom_env / "elsewhere.html"
    assert report_cli(str(spec), "-o", str(elsewhere)) == str(elsewhere)
    assert f"rep {run.id}" in elsewhere.read_text()
    with pytest.raises(UserError, match=f"no results of run '{run.id[:-1]}x' .*did you mean '{run.id}'"):
        report_cli(run.id[:-1] + "x")
    with pytest.raises(UserError, match="not a run folder"):
        report_cli(str(stillroom_env))


def test_verdict_matrix_colours_by_direction():
    """A lower perplexity is better: the row entry with the lower value is green, the other red; p >= 0.05 is
    neither; both orders of a pair are shown."""
    entries = [{"model": "r/a", "entry": "a", "run_id": "r", "metrics": {"lm/ppl": {"metric": "ppl", "higher_is_better": 0}}},
               {"model": "r/b", "entry": "b", "run_id": "r", "metrics": {"lm/ppl": {"metric": "ppl", "higher_is_better": 0}}},
               {"model": "r/c", "entry": "c", "run_id": "r", "metrics": {"lm/ppl": {"metric": "ppl", "higher_is_better": 0}}}]
    metrics = metric_columns(entries)
    assert metrics == [{"key": "lm/ppl", "label": "lm/ppl", "higher_is_better": False}]
    pairs = [{"run_id": "r", "key": "lm/ppl", "a": "r/a", "b": "r/b", "difference": -2.0, "p_value": 0.01},
             {"run_id": "r", "key": "lm/ppl", "a": "r/a", "b": "r/c", "difference": 1.0, "p_value": 0.2}]
    html = verdict_matrices(pairs, entries, ["a", "b", "c"], metrics)
    found = re.findall(r'<td class="(sig-\w+)" data-a="([^"]+)" data-b="([^"]+)"', html)
    cells = {(a, b): css for css, a, b in found}
    assert cells == {("r/a", "r/b"): "sig-pos", ("r/b", "r/a"): "sig-neg", ("r/a", "r/c"): "sig-none",
                     ("r/c", "r/a"): "sig-none"}
