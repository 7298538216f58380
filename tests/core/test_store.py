"""The SQLite results store: lineage round trip, append-only history, latest-row selection, anchors."""

from __future__ import annotations

import sqlite3

import pytest
from pydantic import BaseModel

from stillroom.results import EvalRun, Evaluation, Lineage, record_run
from stillroom.roles import MetricValue
from stillroom.rundir import RunDirectory, run_containing
from stillroom.runs import Run
from stillroom.results import ResultsStore

LINEAGE = dict(method="sft", options={"kind": "sft", "epochs": 2, "budget": {"steps": 10}},
               teacher={"kind": "hf", "model": "tiny-teacher"}, data={"kind": "local", "checksum": "abc123"},
               spec_hash="f00d", path="/models/x", wall_seconds=12.5, teacher_calls=40, cost=0.25,
               optimizer_steps=30.0, train_tokens=4096.0, flops_estimate=1.5e9, seeds=[0, 1],
               extra={"iterations": [{"iteration": 1, "hard_examples": 3}]})


@pytest.fixture
def store(tmp_path):
    with ResultsStore(tmp_path / "board.sqlite") as opened:
        yield opened


def _add(store, run_id, name, role, value, *, evaluator="bbh", metric="accuracy", **lineage):
    store.add_run(run_id, run_id.split("-")[0])
    model_id = store.add_model(run_id, name, role, **lineage)
    store.add_result(run_id, model_id, evaluator, metric, value, n=100, stderr=0.05)
    return model_id


def test_lineage_round_trip(store):
    store.add_run("r1", "demo", spec_hash="f00d", spec={"name": "demo"}, run_dir="/runs/demo/r1")
    model_id = store.add_model("r1", "demo/sft", "method", **LINEAGE)
    got = store.model("r1", "demo/sft")
    assert got["model_id"] == model_id and got["role"] == "method" and got["name"] == "demo/sft"
    assert {key: got[key] for key in LINEAGE} == LINEAGE
    assert store.model("r1", "demo/missing") is None
    # the same model of the same run is recorded once
    assert store.add_model("r1", "demo/sft", "method", method="other") == model_id
    assert store.model("r1", "demo/sft")["method"] == "sft"


def test_latest_wins_and_history_keeps_both(store):
    _add(store, "a-1", "demo/sft", "method", 0.40)
    _add(store, "b-2", "demo/sft", "method", 0.55)
    latest = store.rows()
    assert [(r["run_id"], r["value"]) for r in latest] == [("b-2", 0.55)]
    assert sorted(r["run_id"] for r in store.rows(latest=False)) == ["a-1", "b-2"]
    # filters apply before picking the latest: an older run can still be looked at on its own
    assert [r["value"] for r in store.rows(run_id="a-1")] == [0.40]
    assert store.rows(model="demo/none") == []


def test_resumed_run_does_not_duplicate(store):
    _add(store, "a-1", "demo/sft", "method", 0.40)
    model_id = store.add_model("a-1", "demo/sft", "method")
    store.add_result("a-1", model_id, "bbh", "accuracy", 0.99)
    assert [r["value"] for r in store.rows(latest=False)] == [0.40]


def test_rows_carry_anchors_of_their_own_run(store):
    _add(store, "a-1", "demo/teacher", "teacher", 0.80)
    _add(store, "a-1", "demo/base", "base", 0.20)
    _add(store, "a-1", "demo/sft", "method", 0.50)
    _add(store, "b-2", "demo/base", "base", 0.30)  # a later base in another run must not move a-1's anchor
    (row,) = store.rows(model="demo/sft")
    assert (row["base_value"], row["teacher_value"]) == (0.20, 0.80)
    (later,) = store.rows(model="demo/base")
    assert later["base_value"] == 0.30 and later["teacher_value"] is None


def test_record_run_writes_lineage_and_is_idempotent(store, tmp_path):
    class Spec(BaseModel):
        name: str = "demo"

    run = Run("r9", "demo", Spec(), "beef", RunDirectory(tmp_path), tmp_path / "spec.toml")
    samples = str(tmp_path / "samples.jsonl")
    evaluation = Evaluation.of("sft", "em", "exact_match", [MetricValue(metric="accuracy", value=0.5, n=10, stderr=0.1),
                                                            {"metric": "f1", "value": 0.6, "n": 10}],
                               samples_path=samples, version="1.2")
    lineage = Lineage("method", method="sft", seeds=(0,), options={"lr": 1e-4}, teacher={"kind": "hf", "model": "t"},
                      data={"kind": "local"}, budget={"wall_seconds": 3.0, "teacher_calls": 7}, extra={"note": 1})
    rows = record_run(store, run, [evaluation], {"sft": lineage})
    assert record_run(store, run, [evaluation], {"sft": lineage}) == rows and len(rows) == 2
    model = store.model("r9", "demo/sft")
    assert model["teacher"] == lineage.teacher and model["data"] == lineage.data and model["seeds"] == [0]
    assert (model["spec_hash"], model["teacher_calls"], model["extra"]) == ("beef", 7, {"note": 1})
    assert (model["optimizer_steps"], model["parent_run"]) == (None, None)  # not measured is not zero
    assert rows[0]["run_dir"] == str(tmp_path) and rows[0]["parent_run"] is None
    assert {r["samples_path"] for r in rows} == {samples}
    assert {(r["metric"], r["value"], r["stderr"]) for r in rows} == {("accuracy", 0.5, 0.1), ("f1", 0.6, None)}
    versions = store.db.execute("SELECT DISTINCT evaluator_version FROM results WHERE run_id = 'r9'").fetchall()
    assert [v[0] for v in versions] == ["1.2"]


def test_eval_runs_keep_model_names_and_their_parent_run(store, tmp_path):
    """`stillroom eval` records through the same record_run: the model keeps its own name, no spec, and the run
    whose folder holds it as ``parent_run``."""
    trained = tmp_path / "runs" / "demo" / "20260101-000000-abcd"
    (trained / "stages" / "methods" / "sft" / "train" / "model").mkdir(parents=True)
    (trained / "manifest.json").write_text('{"run_id": "20260101-000000-abcd"}')
    model = trained / "stages" / "methods" / "sft" / "train" / "model"
    assert run_containing(model) == "20260101-000000-abcd" and run_containing(tmp_path) is None
    run = EvalRun("e1", RunDirectory(tmp_path / "eval" / "e1"))
    evaluation = Evaluation.of("model", "mmlu", "mmlu", [MetricValue(metric="mmlu/acc", value=0.25, n=4)])
    (row,) = record_run(store, run, [evaluation], {"model": Lineage("model", path=str(model),
                                                                    parent_run=run_containing(model))})
    assert (row["model"], row["role"], row["parent_run"], row["spec_hash"], row["seeds"]) == \
        ("model", "model", "20260101-000000-abcd", None, None)
    assert tuple(store.db.execute("SELECT name, spec FROM runs WHERE run_id = 'e1'").fetchone()) == ("eval", None)


def test_store_of_an_earlier_version_gains_the_new_columns(tmp_path):
    """A store written before seeds and budget columns existed opens, keeps its rows and records the new fields."""
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE runs (run_id TEXT PRIMARY KEY, name TEXT NOT NULL, spec_hash TEXT, spec TEXT, run_dir TEXT,
                           parent_run TEXT, created REAL NOT NULL);
        CREATE TABLE models (model_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs,
            name TEXT NOT NULL, role TEXT NOT NULL, method TEXT, options TEXT, teacher TEXT, data TEXT,
            spec_hash TEXT, parent_run TEXT, path TEXT, wall_seconds REAL, teacher_calls INTEGER, cost REAL,
            extra TEXT, created REAL NOT NULL, UNIQUE (run_id, name));
        CREATE TABLE results (result_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
            model_id INTEGER NOT NULL REFERENCES models, evaluator TEXT NOT NULL, metric TEXT NOT NULL,
            value REAL NOT NULL, n INTEGER, stderr REAL, ci_low REAL, ci_high REAL, higher_is_better INTEGER DEFAULT 1,
            evaluator_version TEXT, samples_path TEXT, created REAL NOT NULL, UNIQUE (run_id, model_id, evaluator, metric));
        INSERT INTO runs VALUES ('r0', 'demo', NULL, NULL, NULL, NULL, 1.0);
        INSERT INTO models (run_id, name, role, created) VALUES ('r0', 'demo/sft', 'method', 1.0);
        INSERT INTO results (run_id, model_id, evaluator, metric, value, created) VALUES ('r0', 1, 'em', 'acc', 0.5, 1.0);
    """)
    old.commit()
    old.close()
    with ResultsStore(path) as store:
        (row,) = store.rows()
        assert (row["model"], row["value"], row["verdict"], row["optimizer_steps"]) == ("demo/sft", 0.5, None, None)
        assert row["parent_run"] is None  # this old store had the column: it is reused, not added twice
        store.add_run("r1", "demo")
        model_id = store.add_model("r1", "demo/sft", "method", optimizer_steps=12, seeds=[0, 1])
        store.add_result("r1", model_id, "em", "acc", 0.75, per_seed={"0": 0.5, "1": 1.0}, verdict="better",
                         p_value=0.01, reference="demo/base")
        (row,) = store.rows()
        assert (row["value"], row["per_seed"], row["verdict"], row["optimizer_steps"]) == (0.75, {"0": 0.5, "1": 1.0},
                                                                                       "better", 12)
    with pytest.raises(TypeError, match="unknown budget columns"):
        with ResultsStore(path) as store:
            store.add_model("r1", "demo/x", "method", optimizer_step=1)


def test_rejects_nan_and_orphans(store):
    model_id = _add(store, "a-1", "demo/sft", "method", 0.4)
    with pytest.raises(ValueError, match="NaN"):
        store.add_result("a-1", model_id, "bbh", "f1", float("nan"))
    with pytest.raises(sqlite3.IntegrityError):
        store.add_result("a-1", model_id + 99, "bbh", "f1", 0.1)


def test_indexes_and_default_location(stillroom_env):
    with ResultsStore.default() as store:
        assert store.path == stillroom_env / "home" / "leaderboard.sqlite"
        indexes = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"models_by_name", "results_by_model", "results_by_run", "results_by_benchmark"} <= indexes
