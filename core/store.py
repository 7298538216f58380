"""The results store: an SQLite leaderboard of runs, models with their lineage, and results.

Nothing is overwritten: every run adds rows, and the leaderboard shows the latest result per model name,
evaluator and metric (the one recorded last) unless asked for history. Filters apply first, so
``rows(method="sft")`` gives the latest sft result of each model. Within one run recording is idempotent,
so a resumed run never duplicates its rows. Per-sample records stay in the run directory; a result keeps
their path (``samples_path``) for paired tests. This module is the SQLite layer only: it stores and queries
(``core/results.py`` decides what a run records), and it renders nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any

from stillroom import paths
from stillroom.cache import open_sqlite, raise_if_disk_full

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, name TEXT NOT NULL, spec_hash TEXT, spec TEXT, run_dir TEXT, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    model_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs, name TEXT NOT NULL,
    role TEXT NOT NULL, method TEXT, options TEXT, teacher TEXT, data TEXT, spec_hash TEXT,
    path TEXT, wall_seconds REAL, teacher_calls INTEGER, cost REAL, extra TEXT, created REAL NOT NULL,
    UNIQUE (run_id, name)
);
CREATE TABLE IF NOT EXISTS results (
    result_id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, model_id INTEGER NOT NULL REFERENCES models,
    evaluator TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL, n INTEGER, stderr REAL,
    ci_low REAL, ci_high REAL, higher_is_better INTEGER DEFAULT 1, evaluator_version TEXT, samples_path TEXT,
    created REAL NOT NULL,
    UNIQUE (run_id, model_id, evaluator, metric)
);
CREATE INDEX IF NOT EXISTS models_by_name ON models (name);
CREATE INDEX IF NOT EXISTS results_by_model ON results (model_id, evaluator, metric);
CREATE INDEX IF NOT EXISTS results_by_run ON results (run_id);
CREATE INDEX IF NOT EXISTS results_by_benchmark ON results (evaluator, metric);
"""

# Columns added after the first release, with their types: a store created earlier gains them when opened.
# Models: what the entry consumed (``BUDGET_COLUMNS``, averaged over seeds), its seeds, and the run whose folder
# holds the model (``parent_run``: a model that `stillroom eval` scored). Results: the value aggregated over seeds
# and the comparison with the run's reference (``significance``).
BUDGET_COLUMNS = ("optimizer_steps", "train_sequences", "train_tokens", "teacher_forward_tokens", "teacher_calls",
                  "teacher_tokens", "teacher_calls_paid", "student_generated_tokens", "flops_estimate",
                  "wall_seconds", "cost")
ADDED_COLUMNS = {
    "models": {**{c: "REAL" for c in BUDGET_COLUMNS if c not in ("wall_seconds", "teacher_calls", "cost")},
               "seeds": "TEXT", "parent_run": "TEXT"},
    "results": {"seeds": "TEXT", "per_seed": "TEXT", "seed_samples": "TEXT", "reference": "TEXT",
                "diff_vs_reference": "REAL", "diff_ci_low": "REAL", "diff_ci_high": "REAL", "p_value": "REAL",
                "p_value_raw": "REAL", "verdict": "TEXT"},
}
COMPARISON_FIELDS = ("reference", "diff_vs_reference", "diff_ci_low", "diff_ci_high", "p_value", "p_value_raw",
                     "verdict")
JSON_COLUMNS = ("options", "teacher", "data", "extra", "seeds", "per_seed", "seed_samples")
_ROWS = """
    SELECT m.name AS model, m.role, m.method, r.evaluator, r.metric, r.value, r.n, r.stderr, r.ci_low, r.ci_high,
           r.higher_is_better, r.run_id, m.spec_hash, r.samples_path, r.created, r.result_id, m.options, m.teacher,
           m.data, m.extra, m.parent_run, ru.run_dir, r.seeds, r.per_seed, r.seed_samples, r.reference,
           r.diff_vs_reference, r.diff_ci_low, r.diff_ci_high, r.p_value, r.p_value_raw, r.verdict,
           """ + ", ".join(f"m.{c}" for c in BUDGET_COLUMNS) + """,
           ROW_NUMBER() OVER (PARTITION BY m.name, r.evaluator, r.metric ORDER BY r.result_id DESC) AS recency
    FROM results r JOIN models m ON m.model_id = r.model_id LEFT JOIN runs ru ON ru.run_id = r.run_id"""


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in JSON_COLUMNS:
        if key in out:
            out[key] = json.loads(out[key]) if out[key] else None
    return out


class ResultsStore:
    """Add runs, models and results; query the leaderboard."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = open_sqlite(self.path, "results store")
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        self._add_new_columns()

    def _add_new_columns(self) -> None:
        """Bring a store written by an earlier version up to this schema (new columns only; nothing is lost)."""
        for table, columns in ADDED_COLUMNS.items():
            present = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            missing = [(name, kind) for name, kind in columns.items() if name not in present]
            if missing:
                with self._writing():
                    for name, kind in missing:
                        try:
                            self.db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                        except sqlite3.OperationalError as exc:
                            # another process opening the same old store added it first
                            if "duplicate column name" not in str(exc):
                                raise

    @contextlib.contextmanager
    def _writing(self):
        """One transaction; a full disk becomes an OSError naming the store (one line from the CLI)."""
        try:
            with self.db:
                yield
        except sqlite3.Error as exc:
            raise_if_disk_full(exc, self.path)
            raise

    @classmethod
    def default(cls) -> "ResultsStore":
        """The store under ``STILLROOM_HOME`` (or the per-user data directory)."""
        return cls(paths.home_dir() / "leaderboard.sqlite")

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_run(self, run_id: str, name: str, *, spec_hash: str | None = None, spec: Any = None,
                run_dir: str | None = None) -> None:
        with self._writing():
            self.db.execute("INSERT OR IGNORE INTO runs (run_id, name, spec_hash, spec, run_dir, created) "
                            "VALUES (?, ?, ?, ?, ?, ?)", (run_id, name, spec_hash, _dumps(spec), run_dir, time.time()))

    def add_model(self, run_id: str, name: str, role: str, *, method: str | None = None,
                  options: Any = None, teacher: Any = None, data: Any = None, spec_hash: str | None = None,
                  path: str | None = None, extra: Any = None, seeds: list[int] | None = None,
                  parent_run: str | None = None, **budget: float | None) -> int:
        """Record a model of a run added with ``add_run`` (once per run and name); returns its id. ``parent_run``:
        the run that made the model, when another run scores it; ``budget``: what it consumed, under the names of
        ``BUDGET_COLUMNS``."""
        unknown = set(budget) - set(BUDGET_COLUMNS)
        if unknown:
            raise TypeError(f"add_model: unknown budget columns {sorted(unknown)}")
        columns = ["run_id", "name", "role", "method", "options", "teacher", "data", "spec_hash", "path", "extra",
                   "seeds", "parent_run", "created", *BUDGET_COLUMNS]
        values = [run_id, name, role, method, _dumps(options), _dumps(teacher), _dumps(data), spec_hash, path,
                  _dumps(extra), _dumps(seeds), parent_run, time.time(), *(budget.get(c) for c in BUDGET_COLUMNS)]
        with self._writing():
            self.db.execute(f"INSERT OR IGNORE INTO models ({', '.join(columns)}) "
                            f"VALUES ({', '.join('?' * len(columns))})", values)
        return self.db.execute("SELECT model_id FROM models WHERE run_id = ? AND name = ?", (run_id, name)).fetchone()[0]

    def add_result(self, run_id: str, model_id: int, evaluator: str, metric: str, value: float, *, n: int | None = None,
                   stderr: float | None = None, ci_low: float | None = None, ci_high: float | None = None,
                   higher_is_better: bool = True, evaluator_version: str | None = None,
                   samples_path: str | None = None, seeds: list[int] | None = None,
                   per_seed: dict[str, float] | None = None, seed_samples: dict[str, str] | None = None,
                   **comparison: Any) -> None:
        """One result; with several seeds ``value`` is their mean and ``per_seed``/``seed_samples`` hold each
        seed's value and per-sample records; ``comparison``: the fields of ``COMPARISON_FIELDS``."""
        value = float(value)
        if math.isnan(value):  # SQLite would store NULL and break the NOT NULL column with a worse message
            raise ValueError(f"{evaluator}/{metric}: value is NaN")
        unknown = set(comparison) - set(COMPARISON_FIELDS)
        if unknown:
            raise TypeError(f"add_result: unknown fields {sorted(unknown)}")
        columns = ["run_id", "model_id", "evaluator", "metric", "value", "n", "stderr", "ci_low", "ci_high",
                   "higher_is_better", "evaluator_version", "samples_path", "created", "seeds", "per_seed",
                   "seed_samples", *COMPARISON_FIELDS]
        values = [run_id, model_id, evaluator, metric, value, n, stderr, ci_low, ci_high, int(higher_is_better),
                  evaluator_version, samples_path, time.time(), _dumps(seeds), _dumps(per_seed),
                  _dumps(seed_samples), *(comparison.get(c) for c in COMPARISON_FIELDS)]
        with self._writing():
            self.db.execute(f"INSERT OR IGNORE INTO results ({', '.join(columns)}) "
                            f"VALUES ({', '.join('?' * len(columns))})", values)

    def model(self, run_id: str, name: str) -> dict[str, Any] | None:
        """One model's record with its lineage (JSON fields decoded), or None."""
        row = self.db.execute("SELECT * FROM models WHERE run_id = ? AND name = ?", (run_id, name)).fetchone()
        return _decode(row) if row is not None else None

    def model_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT name FROM models ORDER BY name")]

    def rows(self, *, latest: bool = True, evaluator: str | None = None, method: str | None = None,
             run_id: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Leaderboard rows: result, model and lineage fields, plus ``base_value`` and ``teacher_value`` from the
        same run, evaluator and metric; with ``latest`` only the newest matching result per (model, evaluator, metric)."""
        where, args = [], []
        for column, value in (("r.evaluator", evaluator), ("m.method", method), ("r.run_id", run_id), ("m.name", model)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        query = f"SELECT * FROM ({_ROWS}{' WHERE ' + ' AND '.join(where) if where else ''})"
        if latest:
            query += " WHERE recency = 1"
        query += " ORDER BY evaluator, metric, value DESC, result_id"
        rows = [_decode(row) for row in self.db.execute(query, args)]
        for row in rows:
            del row["recency"]
        self._attach_anchors(rows)
        return rows

    def _attach_anchors(self, rows: list[dict[str, Any]]) -> None:
        anchors = {tuple(found)[:4]: found["value"] for found in self.db.execute(
            "SELECT r.run_id, m.role, r.evaluator, r.metric, r.value FROM results r JOIN models m "
            "ON m.model_id = r.model_id WHERE m.role IN ('teacher', 'base')")}
        for row in rows:
            for role in ("base", "teacher"):
                row[f"{role}_value"] = anchors.get((row["run_id"], role, row["evaluator"], row["metric"]))

    def close(self) -> None:
        self.db.close()

