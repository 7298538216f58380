"""The SQLite results store: lineage round trip, append-only history, latest-row selection, anchors."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from stillroom.store import ResultsStore, record_run

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

    run = SimpleNamespace(id="r9", name="demo", spec_hash="beef", spec=Spec(), dir=SimpleNamespace(root=tmp_path))
    evaluated = [{"subject": "sft", "role": "method", "method": "sft", "evaluator": "em", "options": {"lr": 1e-4},
                  "wall_seconds": 3.0, "teacher_calls": 7, "extra": {"note": 1},
                  "result": {"metrics": [{"metric": "accuracy", "value": 0.5, "n": 10, "stderr": 0.1},
                                         {"metric": "f1", "value": 0.6, "n": 10}],
                             "samples_path": str(tmp_path / "samples.jsonl")}}]
    lineage = {"teacher": {"kind": "hf", "model": "t"}, "data": {"kind": "local"}}
    rows = record_run(store, run, evaluated, lineage)
    assert record_run(store, run, evaluated, lineage) == rows and len(rows) == 2
    model = store.model("r9", "demo/sft")
    assert model["teacher"] == lineage["teacher"] and model["data"] == lineage["data"]
    assert (model["spec_hash"], model["teacher_calls"], model["extra"]) == ("beef", 7, {"note": 1})
    assert rows[0]["run_dir"] == str(tmp_path) and "parent_run" not in rows[0]
    assert {r["samples_path"] for r in rows} == {str(tmp_path / "samples.jsonl")}


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
