"""Leaderboard rendering, gap closed, sorting, paired significance tests and the `leaderboard` command."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from unittest.mock import patch

import numpy as np
import pytest
from rich.console import Console
from scipy import stats
from typer.testing import CliRunner

import stillroom.cli
from stillroom.cli import app
from stillroom.leaderboard import add_gap_closed, gap_closed, mcnemar, paired_bootstrap, render, sort_rows
from stillroom.results import ResultsStore
from stillroom.roles import UserError

REQUIRED = {"model", "method", "evaluator", "metric", "value", "n", "stderr", "run_id"}


def _write_samples(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def populate(store, folder):
    """Run r1 (teacher, base, sft, gkd) on two evaluators, then a rerun r2 of sft; per-sample records for each."""
    rng = np.random.default_rng(7)
    truth = {"teacher": 0.85, "base": 0.35, "sft": 0.6, "gkd": 0.7}
    for run_id, subjects in (("r1", ["teacher", "base", "sft", "gkd"]), ("r2", ["sft"])):
        store.add_run(run_id, "demo", spec_hash="h" + run_id)
        for subject in subjects:
            role = subject if subject in ("teacher", "base") else "method"
            model_id = store.add_model(run_id, f"demo/{subject}", role, method=None if role != "method" else subject,
                                       teacher={"kind": "hf", "model": "t"}, wall_seconds=10.0, teacher_calls=50,
                                       cost=0.5 if role == "method" else None)
            correct = rng.random(60) < truth[subject] + (0.05 if run_id == "r2" else 0)
            scores = np.clip(rng.normal(truth[subject], 0.1, 40), 0, 1)
            em = _write_samples(folder / f"{run_id}-{subject}-em.jsonl",
                                [{"id": f"q{i}", "correct": bool(c)} for i, c in enumerate(correct)])
            judge = _write_samples(folder / f"{run_id}-{subject}-judge.jsonl",
                                   [{"id": i, "score": float(s)} for i, s in enumerate(scores)])
            store.add_result(run_id, model_id, "em", "accuracy", float(correct.mean()), n=60,
                             stderr=float(correct.std() / math.sqrt(60)), samples_path=em)
            store.add_result(run_id, model_id, "judge", "score", float(scores.mean()), n=40,
                             ci_low=float(scores.mean() - 0.03), ci_high=float(scores.mean() + 0.03), samples_path=judge)


@pytest.fixture
def board(stillroom_env):
    with ResultsStore.default() as store:
        populate(store, stillroom_env)
        yield store


def cli(*args):
    with patch.object(stillroom.cli, "console", Console(width=250)):  # wide enough to print whole cells
        result = CliRunner().invoke(app, ["leaderboard", *args])
    if isinstance(result.exception, UserError):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


# gap closed ------------------------------------------------------------------------------------------------

def test_gap_closed_arithmetic():
    assert gap_closed(0.6, 0.4, 0.8) == pytest.approx(0.5)
    assert gap_closed(0.4, 0.4, 0.8) == 0 and gap_closed(0.8, 0.4, 0.8) == 1
    assert gap_closed(0.9, 0.4, 0.8) == pytest.approx(1.25)  # beats the teacher
    assert gap_closed(0.3, 0.4, 0.8) == pytest.approx(-0.25)  # worse than untrained
    assert gap_closed(15.0, 20.0, 10.0) == pytest.approx(0.5)  # lower is better (perplexity): same formula
    assert gap_closed(0.7, 0.5, 0.5) is None  # teacher == base: undefined


def test_gap_closed_per_run_and_benchmark(board):
    rows = {(r["model"], r["evaluator"], r["run_id"]): r for r in add_gap_closed(board.rows(latest=False))}
    teacher, base = rows["demo/teacher", "em", "r1"]["value"], rows["demo/base", "em", "r1"]["value"]
    assert rows["demo/gkd", "em", "r1"]["gap_closed"] == pytest.approx(
        (rows["demo/gkd", "em", "r1"]["value"] - base) / (teacher - base))
    assert rows["demo/sft", "em", "r2"]["gap_closed"] is None  # run r2 has no teacher or base of its own
    assert rows["demo/teacher", "em", "r1"]["gap_closed"] is None
    plain = add_gap_closed([{"run_id": "x", "evaluator": "e", "metric": "m", "role": r, "value": v}
                            for r, v in (("teacher", 0.5), ("base", 0.5), ("method", 0.7))])
    assert plain[2]["gap_closed"] is None


# sorting and formats ---------------------------------------------------------------------------------------

def test_sort_rows():
    rows = [{"model": "b", "value": 0.2, "cost": None}, {"model": "a", "value": 0.9, "cost": 2.0},
            {"model": "c", "value": 0.5, "cost": 1.0}]
    assert [r["model"] for r in sort_rows(rows, "value")] == ["a", "c", "b"]
    assert [r["model"] for r in sort_rows(rows, "value", False)] == ["b", "c", "a"]
    assert [r["model"] for r in sort_rows(rows, "model")] == ["a", "b", "c"]
    assert [r["model"] for r in sort_rows(rows, "cost", False)] == ["c", "a", "b"]  # empty last either way
    assert [r["model"] for r in sort_rows(rows, "cost", True)] == ["a", "c", "b"]
    with pytest.raises(UserError, match="did you mean 'value'"):
        sort_rows(rows, "valeu")


def test_every_format(board):
    rows = board.rows()
    assert len(rows) == 8
    console = Console(file=io.StringIO(), width=250)
    assert render(rows, "table", console) == ""
    table = console.file.getvalue()
    assert "gap_closed" in table and all(name in table for name in ("demo/teacher", "demo/base", "demo/sft", "demo/gkd"))

    md = render(rows, "md").splitlines()
    assert len(md) == 2 + len(rows) and md[0].startswith("| model | method |")

    parsed = list(csv.DictReader(io.StringIO(render(rows, "csv"))))
    assert [(r["model"], r["evaluator"], float(r["value"])) for r in parsed] == \
        [(r["model"], r["evaluator"], r["value"]) for r in rows]

    data = json.loads(render(rows, "json", sort="value", descending=False))
    assert all(REQUIRED <= set(item) for item in data) and len(data) == len(rows)
    assert [d["value"] for d in data] == sorted(r["value"] for r in rows)
    assert next(d for d in data if d["model"] == "demo/sft" and d["evaluator"] == "em")["run_id"] == "r2"

    # the report's layout is tested in test_report_browser.py; here: one self-contained page naming every model
    from stillroom.plugins.formats.report import html_report

    html = html_report(rows)
    assert html.startswith("<!doctype html>") and all(name in html for name in ("demo/teacher", "demo/gkd"))
    assert not re.search(r"<script src|<link ", html)  # self-contained: nothing fetched
    with pytest.raises(UserError, match="unknown format"):
        render(rows, "xml")


# significance ----------------------------------------------------------------------------------------------

def _pairs(only_a, only_b, both=10, neither=5):
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    return a, b


@pytest.mark.parametrize("only_a,only_b", [(0, 0), (3, 0), (7, 2), (5, 5), (12, 12), (1, 23)])
def test_mcnemar_exact_matches_scipy_binomtest(only_a, only_b):
    result = mcnemar(*_pairs(only_a, only_b))
    assert result["method"] == "exact"
    expected = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert result["p_value"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("only_a,only_b", [(20, 5), (13, 12), (40, 25), (100, 140)])
def test_mcnemar_chi2_with_continuity_correction(only_a, only_b):
    a, b = _pairs(only_a, only_b)
    result = mcnemar(a, b)
    statistic = max(abs(only_a - only_b) - 1, 0) ** 2 / (only_a + only_b)
    assert result["method"] == "chi2" and result["statistic"] == pytest.approx(statistic)
    assert result["p_value"] == pytest.approx(stats.chi2.sf(statistic, 1), rel=1e-9)
    n = len(a)
    difference = (only_a - only_b) / n
    se = math.sqrt((only_a + only_b) - (only_a - only_b) ** 2 / n) / n
    assert result["difference"] == pytest.approx(np.mean(a) - np.mean(b))
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((difference - 1.959964 * se, difference + 1.959964 * se))


@pytest.mark.parametrize("n", [50, 700])  # 700 items: drawn in several chunks, which must not change the stream
def test_paired_bootstrap_against_seeded_reference(n):
    rng = np.random.default_rng(3)
    a, b = rng.random(n), rng.random(n) * 0.9
    result = paired_bootstrap(list(a), list(b), resamples=10_000, seed=11)
    diffs = a - b  # reference: one (resamples, n) draw from the documented generator
    means = diffs[np.random.default_rng(11).integers(0, n, size=(10_000, n))].mean(axis=1)
    assert result["difference"] == pytest.approx(diffs.mean())
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    extreme = np.count_nonzero(np.abs(means - diffs.mean()) >= abs(diffs.mean()))
    assert result["p_value"] == pytest.approx((1 + extreme) / 10_001)
    assert paired_bootstrap(list(a), list(b), seed=11) == result  # deterministic


def test_paired_bootstrap_hand_cases():
    # two items with differences 0 and 1: resampled means are 0, .5, 1 with probability 1/4, 1/2, 1/4
    result = paired_bootstrap([1.0, 1.0], [1.0, 0.0], resamples=4000, seed=0)
    assert (result["ci_low"], result["ci_high"]) == (0.0, 1.0) and result["difference"] == 0.5
    constant = paired_bootstrap([0.7] * 5, [0.5] * 5, resamples=999)
    assert constant["ci_low"] == constant["ci_high"] == pytest.approx(0.2)
    assert constant["p_value"] == pytest.approx(1 / 1000)  # no resample as far from the null as observed
    assert paired_bootstrap([0.3] * 4, [0.3] * 4, resamples=99)["p_value"] == 1.0


# the command -----------------------------------------------------------------------------------------------

def test_cli_history_filters_sort_and_files(board, stillroom_env):
    latest = json.loads(cli("--format", "json"))  # json stays one row per result unless --pivot
    every = json.loads(cli("--format", "json", "--history", "--long"))
    assert len(latest) == 8 and len(every) == 10
    assert sorted(r["run_id"] for r in every if r["model"] == "demo/sft" and r["evaluator"] == "em") == ["r1", "r2"]
    only = json.loads(cli("-f", "json", "--evaluator", "judge", "--method", "gkd", "--long"))
    assert [(r["model"], r["evaluator"]) for r in only] == [("demo/gkd", "judge")]
    assert {r["run_id"] for r in json.loads(cli("-f", "json", "--run", "r1", "--long"))} == {"r1"}
    ordered = json.loads(cli("-f", "json", "--sort", "model", "--desc", "--long"))
    assert [r["model"] for r in ordered] == sorted((r["model"] for r in ordered), reverse=True)
    assert "gkd" in cli("--model", "demo/gkd") and "demo/gkd" in cli("--model", "demo/gkd", "--long")
    cli("-f", "html", "-o", str(stillroom_env / "report.html"))
    assert (stillroom_env / "report.html").read_text().startswith("<!doctype html>")
    cli("-f", "csv", "--long", "-o", str(stillroom_env / "board.csv"))
    assert len(list(csv.DictReader((stillroom_env / "board.csv").open()))) == 8
    # the default is the pivot: one row per model, both evaluators as columns; --history: one per model and run
    cli("-f", "csv", "-o", str(stillroom_env / "pivot.csv"))
    pivoted = list(csv.DictReader((stillroom_env / "pivot.csv").open()))
    assert sorted(r["model"] for r in pivoted) == ["demo/base", "demo/gkd", "demo/sft", "demo/teacher"]
    assert {"em/accuracy", "judge/score", "em/accuracy verdict", "optimizer_steps"} <= set(pivoted[0])
    history_pivot = json.loads(cli("-f", "json", "--history", "--pivot"))
    assert sorted((e["model"], e["run_id"]) for e in history_pivot if e["model"] == "demo/sft") == \
        [("demo/sft", "r1"), ("demo/sft", "r2")]
    with pytest.raises(UserError, match="add -o"):
        cli("-f", "html")
    with pytest.raises(UserError, match="did you mean 'md'"):
        cli("-f", "mdd")


def test_cli_compare(board, stillroom_env):
    results = json.loads(cli("--compare", "demo/gkd", "demo/base", "--format", "json"))
    assert [(r["evaluator"], r["field"], r["test"]) for r in results] == \
        [("em", "correct", "mcnemar"), ("judge", "score", "paired_bootstrap")]
    em = results[0]
    assert em["n"] == 60 and em["difference"] == pytest.approx(em["a"] - em["b"])
    assert em["ci_low"] < em["difference"] < em["ci_high"] and 0 <= em["p_value"] <= 1
    assert results[1]["p_value"] < 0.01  # 0.7 vs 0.35 mean score over 40 items
    table = cli("--compare", "demo/gkd", "demo/base")
    assert "A = demo/gkd" in table and "McNemar" in table and f"{em['difference']:+.3f}" in table
    with pytest.raises(UserError, match="unknown model 'demo/gdk' \\(did you mean 'demo/gkd'"):
        cli("--compare", "demo/gdk", "demo/base")
    # the same evaluator with disjoint item ids
    board.add_run("r4", "other")
    model_id = board.add_model("r4", "other/x", "method")
    samples = _write_samples(stillroom_env / "other.jsonl", [{"id": "zz", "correct": True}])
    board.add_result("r4", model_id, "em", "accuracy", 1.0, n=1, samples_path=samples)
    with pytest.raises(UserError, match="em: no item ids in common"):
        cli("--compare", "other/x", "demo/base")


def test_run_writes_report_and_compares_real_samples(toy_host, toy_spec):
    from stillroom.runs import execute

    run = execute(toy_spec, host=toy_host)
    with ResultsStore.default() as store:
        rows = store.rows(run_id=run.id)
    html = (run.dir.root / "report.html").read_text()
    assert run.id in html and len(rows) == 4 and all(f"toy/{m}" in html or f">{m}<" in html
                                                     for m in ("teacher", "base", "copy", "gold"))
    (result,) = json.loads(cli("--compare", "toy/teacher", "toy/base", "-f", "json"))
    assert (result["test"], result["a"], result["b"], result["only_a"]) == ("mcnemar", 1.0, 0.0, result["n"])


def test_compare_fits_an_80_column_terminal(board, stillroom_env):
    """`--compare` in a real process with COLUMNS=80: no line wider than 80, no cell cut, the numbers all there."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "80", "LINES": "40"}
    done = subprocess.run([sys.executable, "-m", "stillroom.cli", "leaderboard", "--compare", "demo/gkd", "demo/base"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in done.stdout, done.stdout
    results = json.loads(cli("--compare", "demo/gkd", "demo/base", "-f", "json"))
    for r in results:
        row = next(line for line in lines if line.strip().startswith(r["evaluator"] + " "))
        assert f"{r['a']:.3f}" in row and f"{r['difference']:+.3f}" in row and f"{r['ci_high']:+.3f}]" in row
    assert "A = demo/gkd" in done.stdout and "B = demo/base" in done.stdout


def test_pivot_rows_carry_intervals_verdicts_and_budget(board):
    """The pivot of hand-made rows: one row per model, reference first among methods, verdict cells."""
    from stillroom.leaderboard import pivot, render_pivot

    rows = board.rows(run_id="r1")
    for row in rows:
        row.update(reference="demo/sft", verdict="better" if row["model"] == "demo/gkd" else None,
                   p_value=0.004 if row["model"] == "demo/gkd" else None, seeds=[0, 1], optimizer_steps=30.0)
    entries = pivot(rows)
    assert [e["model"] for e in entries] == ["demo/teacher", "demo/base", "demo/sft", "demo/gkd"]
    gkd = entries[-1]
    assert gkd["seeds"] == [0, 1] and gkd["optimizer_steps"] == 30.0 and not gkd["is_reference"]
    assert set(gkd["metrics"]) == {"em/accuracy", "judge/score"}
    assert gkd["metrics"]["em/accuracy"]["verdict"] == "better" and entries[2]["is_reference"]
    console = Console(file=io.StringIO(), width=200)
    render_pivot(rows, "table", console)
    table = console.file.getvalue()
    gkd_line = next(line for line in table.splitlines() if line.lstrip().startswith("gkd "))
    assert "better" in gkd_line and "p=0.004" in table and "reference" in table and "steps" in table
    assert "seeds 0, 1" in table  # the seeds every entry shares, said once
    md = render_pivot(rows, "md", sort="judge/score", descending=False).splitlines()
    assert len(md) == 2 + 4 and "demo/base" in md[2]  # lowest judge score first
    with pytest.raises(UserError, match="did you mean 'judge/score'"):
        render_pivot(rows, "md", sort="judge/scor")


def test_the_run_report_is_the_registered_html_format(toy_spec, stillroom_env):
    """A finished run's report.html, and `stillroom report`, draw through the renderer registered as html: a
    plugin replacing it replaces the run's page; with no html renderer the run writes none and `report` says why."""
    from toy_components import toy

    from stillroom import OutputRenderer, hookimpl
    from stillroom.plugin_manager import make_host, use_host
    from stillroom.plugins import formats
    from stillroom.runs import execute

    class Page:
        @hookimpl
        def stillroom_register_output_renderers(self, register):
            register(OutputRenderer("html", "a plain page", lambda rows, options: f"<p>{options.title}: "
                                    + ", ".join(sorted(r["model"] for r in options.results)) + "</p>",
                                    destination="file", extension=".html"))

    for modules, expected in (({"toy": toy, "formats": formats, "page": Page()}, "<p>toy "),
                              ({"toy": toy}, None)):
        previous = use_host(make_host(modules=modules, entry_points=False))
        try:
            run = execute(toy_spec)
            page = run.dir.root / "report.html"
            if expected is None:
                assert not page.exists()
                with pytest.raises(UserError, match="no output format named html is registered"):
                    result = CliRunner().invoke(app, ["report", run.id])
                    raise result.exception
            else:
                assert page.read_text().startswith(expected + run.id) and "toy/copy" in page.read_text()
                page.unlink()
                assert CliRunner().invoke(app, ["report", run.id]).exit_code == 0
                assert page.read_text().startswith(expected + run.id)
        finally:
            use_host(previous)
