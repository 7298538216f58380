"""The one budget rule and the stage accounting every method entry gets from the core."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stillroom.specs import BUDGET_RULE_FIELDS, SpecError, read_spec_file, validate_spec
from stillroom.results import ResultsStore

QUICKSTART = Path(__file__).parents[2] / "examples" / "quickstart.toml"
# a value each budget field can take, and a different one for the method entry
VALUES = {"train_examples": (10, 20), "steps": (10, 20), "batch_size": (4, 8), "learning_rate": (0.001, 0.002),
          "warmup_ratio": (0.05, 0.1)}


def _method_fields():
    from stillroom.testing import first_party_host

    host = first_party_host()
    return host, {kind: set(reg.cls.Config.model_fields) for kind, reg in sorted(host.components["method"].items())}


HOST, FIELDS = _method_fields()
CASES = [(kind, name) for kind, fields in FIELDS.items() for name in BUDGET_RULE_FIELDS if name in fields]


def test_every_method_spells_the_budget_fields():
    """The rule compares same-named fields, so a method that trains must call its budget options by these names."""
    assert len(FIELDS) >= 6, FIELDS
    for kind, fields in FIELDS.items():
        assert {"steps", "batch_size", "learning_rate"} <= fields, kind


def _problems(data, host) -> list[str]:
    try:
        validate_spec(data, host)
    except SpecError as exc:
        return exc.lines
    return []


@pytest.mark.parametrize("kind,name", CASES)
def test_budget_conflict_is_the_same_error_for_every_method(kind, name, stillroom_host):
    """A bare entry of some kinds lacks a required option (its own error line); the budget line is the same."""
    shared, own = VALUES[name]
    data = read_spec_file(QUICKSTART)
    data["budget"] = {name: shared}
    data["methods"] = [{"kind": kind, name: own, "label": "entry"}]
    conflict = (f"methods[entry].{name}: {name} = {own!r} conflicts with budget.{name} = {shared!r}; "
                "the budget applies to every method, so remove one of them")
    assert conflict in _problems(data, stillroom_host)
    # the same value in both places, or the option alone, is no conflict
    data["methods"] = [{"kind": kind, name: shared, "label": "entry"}]
    assert not [line for line in _problems(data, stillroom_host) if "conflicts with budget" in line]
    data["budget"] = {}
    data["methods"] = [{"kind": kind, name: own, "label": "entry"}]
    assert not [line for line in _problems(data, stillroom_host) if "conflicts with budget" in line]


def test_cli_reports_a_conflict_in_one_line_and_exit_2(tmp_path, stillroom_env):
    from typer.testing import CliRunner

    from stillroom.cli import app

    spec = tmp_path / "spec.toml"
    spec.write_text(QUICKSTART.read_text().replace('kind = "seqkd"\n', 'kind = "seqkd"\nsteps = 7\n'))
    result = CliRunner().invoke(app, ["spec", "validate", str(spec)])
    assert isinstance(result.exception, SpecError)
    assert result.exception.lines == ["methods[seqkd].steps: steps = 7 conflicts with budget.steps = 1000; the budget "
                                      "applies to every method, so remove one of them"]


def test_stage_accounting_counts_cached_and_paid_calls(toy_host, toy_spec):
    """seqkd-like `copy` asks the teacher 4 times (4 budget records): paid on the first run, from the cache on the
    second; both runs record the same calls and tokens, only what was paid differs."""
    from stillroom.runs import execute

    first = execute(toy_spec, host=toy_host)
    second = execute(toy_spec, host=toy_host)
    # "word 0" -> "WORD 0": 2 prompt + 2 completion tokens per call; the toy endpoint charges 0.01 per call
    expected = {"teacher_calls": 4, "teacher_tokens": 16}
    metrics = [run.dir.stage_metrics("methods/copy/teacher_answers") for run in (first, second)]
    for got in metrics:
        assert {k: got[k] for k in expected} == expected and got["wall_seconds"] >= 0
    assert (metrics[0]["teacher_calls_paid"], metrics[0]["cost"]) == (4, pytest.approx(0.04))
    assert (metrics[1]["teacher_calls_paid"], metrics[1]["cost"]) == (0, 0)
    assert first.dir.stage_metrics("methods/gold/train")["teacher_calls"] == 0
    with ResultsStore.default() as store:
        rows = {(r["run_id"], r["model"]): r for r in store.rows(latest=False)}
    for run, paid, cost in ((first, 4, 0.04), (second, 0, 0.0)):
        copy = rows[(run.id, "toy/copy")]
        assert (copy["teacher_calls"], copy["teacher_tokens"], copy["teacher_calls_paid"]) == (4, 16, paid)
        assert copy["cost"] == pytest.approx(cost) and copy["wall_seconds"] is not None
        assert rows[(run.id, "toy/teacher")]["teacher_calls"] is None  # not a method entry: nothing measured
    calls = json.loads((first.dir.root / "calls.json").read_text())
    assert calls["up"]["requests"] == 8 and calls["up"]["cache_hits"] == 0  # 4 answers + 4 evaluation prompts


def test_calls_made_in_entry_processes_are_accounted(toy_host, toy_spec, monkeypatch):
    """With --jobs the teacher is asked from child processes: their calls still reach calls.json and the stage."""
    import os

    from stillroom.runs import LaunchOptions, execute
    from toy_components import make_toy_host

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    run = execute(toy_spec, host=toy_host, launch=LaunchOptions(jobs=2, host_factory=make_toy_host))
    metrics = run.dir.stage_metrics("methods/copy/teacher_answers")
    assert (metrics["teacher_calls"], metrics["teacher_calls_paid"], metrics["teacher_tokens"]) == (4, 4, 16)
    calls = json.loads((run.dir.root / "calls.json").read_text())
    assert calls["up"]["requests"] == 8 and calls["up"]["cost"] == pytest.approx(0.08)  # 4 in the child, 4 here
