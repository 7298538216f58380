"""Results: what a run measured, as typed records, and the SQLite store that keeps them.

A run produces one ``SubjectResults`` per model and seed: the model's ``Lineage`` (what it came from and what
it consumed) and one ``Evaluation`` per evaluator (``evaluate_subject``, a resumable stage). ``over_seeds``
turns them into one lineage per model and one evaluation per model and evaluator: the mean over seeds with its
interval and the paired comparison with the run's reference entry (the statistics are the leaderboard's,
``core/leaderboard.py``). ``record_run`` is the one writer of results: ``stillroom run`` and ``stillroom eval``
both record through it into the ``ResultsStore``.

The store adds and never overwrites: every run adds rows, and the leaderboard shows the latest result per model
name, evaluator and metric (the one recorded last) unless asked for history. Filters apply first, so
``rows(method="sft")`` gives the latest sft result of each model. Within one run recording is idempotent, so a
resumed run never duplicates its rows. Per-sample records stay in the run directory; a result keeps their path
(``samples_path``) for paired tests.

This module records and keeps; it trains nothing, draws no conclusion beyond averaging over seeds, and renders
nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from pydantic import ConfigDict

from stillroom import paths
from stillroom.cache import open_sqlite, raise_if_disk_full
from stillroom.roles import Component, MetricValue, Subject
from stillroom.rundir import RunDirectory, write_json_atomic, write_jsonl_atomic


class Score(MetricValue):
    """A metric as the leaderboard keeps it: the evaluator's ``MetricValue`` and, once aggregated over a model's
    seeds, each seed's value and samples, and the comparison with the run's reference entry."""

    model_config = ConfigDict(frozen=True)

    samples_path: str | None = None  # this metric's per-sample records (default: the evaluation's)
    seeds: list[int] | None = None  # the seeds averaged ([] for a model trained once, None outside a run)
    per_seed: dict[str, float] | None = None
    seed_samples: dict[str, str | None] | None = None
    reference: str | None = None  # the model compared with, as the store names it
    diff_vs_reference: float | None = None
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None
    p_value: float | None = None  # Holm-adjusted across the run's entries
    p_value_raw: float | None = None
    verdict: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """One evaluator's metrics on one subject: at one seed, or (after ``over_seeds``) over all its seeds."""

    subject: str  # the model's name within its run (``sft``, ``teacher``, ``base``, a model folder's name)
    evaluator: str  # the evaluator's label on the leaderboard
    kind: str | None  # the evaluator's kind
    metrics: tuple[Score, ...]
    n: int  # the largest sample size among the metrics
    samples_path: str | None = None  # per-sample records (``samples.jsonl`` in the run folder)
    wall_seconds: float | None = None  # time the evaluation took (None when it was not timed)
    seed: int | None = None  # the entry's seed (None: a model trained once, or aggregated)
    version: str | None = None  # the version of the plugin that provides the evaluator

    @classmethod
    def of(cls, subject: str, evaluator: str, kind: str | None, metrics: Sequence[MetricValue | dict[str, Any]],
           **fields: Any) -> "Evaluation":
        """An evaluation of an evaluator's metrics (``MetricValue``s or their JSON); ``fields``: the others."""
        scores = tuple(Score.model_validate(m.model_dump() if isinstance(m, MetricValue) else m) for m in metrics)
        return cls(subject, evaluator, kind, scores, max((m.n for m in scores), default=0), **fields)


@dataclass(frozen=True)
class Lineage:
    """What a model came from and what making it consumed (the store's ``models`` row)."""

    role: str  # teacher, base, method, model (``stillroom eval``) or predictions
    method: str | None = None  # the method kind that trained it
    seeds: tuple[int, ...] | None = None  # the seeds it was trained at (one per outcome; () for teacher and base)
    parent_run: str | None = None  # the run whose folder holds the model scored (``stillroom eval``)
    path: str | None = None  # where the model is (a folder, a hub id or an API address)
    options: dict[str, Any] | None = None  # the method entry's options (with the spec's budget)
    teacher: dict[str, Any] | None = None  # the teacher's identity
    data: dict[str, Any] | None = None  # the data's kind, options and checksum
    budget: Mapping[str, float | None] = field(default_factory=dict)  # consumed, under ``BUDGET_COLUMNS`` names
    extra: dict[str, Any] | None = None  # what the method reported besides metrics


@dataclass(frozen=True)
class SubjectResults:
    """What a run produces for one model at one seed: its lineage and one evaluation per evaluator."""

    subject: str
    lineage: Lineage
    evaluations: tuple[Evaluation, ...]


class RecordedRun(Protocol):
    """What ``record_run`` needs of a run: ``runs.Run`` for a spec's run, ``EvalRun`` for ``stillroom eval``."""

    id: str
    name: str
    spec_hash: str | None
    dir: RunDirectory

    def spec_json(self) -> dict[str, Any] | None: ...

    def model_name(self, subject: str) -> str: ...


@dataclass(frozen=True)
class EvalRun:
    """A run of ``stillroom eval``: no spec; each model keeps its own name on the leaderboard."""

    id: str
    dir: RunDirectory
    name: str = "eval"
    spec_hash: str | None = None

    def spec_json(self) -> dict[str, Any] | None:
        return None

    def model_name(self, subject: str) -> str:
        return subject


class Stages(Protocol):
    """Where an evaluation runs as a resumable stage: a ``RunDirectory``, or a method's ``Job`` (whose stage
    names are relative to its entry and whose stages also record what they consumed)."""

    def stage(self, name: str, produce: Any) -> Path: ...

    def stage_metrics(self, name: str) -> dict[str, Any]: ...


def evaluate_subject(run_dir: Stages, subject_name: str, component: Component, evaluator_label: str,
                     evaluator, role: str, *, stage: str | None = None, seed: int | None = None,
                     version: str | None = None) -> Evaluation:
    """Evaluate one model with one evaluator as a resumable stage of ``run_dir`` (``stage``, by default
    ``eval/<subject>/<evaluator>``); returns its stored metrics as an ``Evaluation``. The one way a model is
    scored: the run's evaluators and a method's own held-out checks (``Job.evaluate``) both come here."""
    import json

    def produce(folder: Path):
        result = evaluator.evaluate(Subject.of(component, subject_name, role))
        write_jsonl_atomic(folder / "samples.jsonl", result.samples)
        write_json_atomic(folder / "result.json", {"metrics": [m.model_dump() for m in result.metrics],
                                                   "details": result.details})
        return {"n": max((m.n for m in result.metrics), default=0)}

    name = stage or f"eval/{subject_name}/{evaluator_label}"
    path = run_dir.stage(name, produce)
    stored = json.loads((path / "result.json").read_text())
    return Evaluation.of(subject_name, evaluator_label, evaluator.name, stored["metrics"],
                         samples_path=str(path / "samples.jsonl"),
                         wall_seconds=run_dir.stage_metrics(name).get("seconds"), seed=seed, version=version)


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def over_seeds(outcomes: Sequence[SubjectResults], reference: str, run_name: str, *,
               resamples: int = 2000) -> tuple[list[Evaluation], dict[str, Lineage]]:
    """One evaluation per model and evaluator, and one lineage per model: metrics averaged over the model's
    seeds with their interval (``leaderboard.aggregate_seeds``), each seed's value and samples, and, for every
    model but ``reference``, the comparison with it (Holm across models, per evaluator and metric). The budget
    consumed is the mean over seeds. Teacher and base outcomes have no seed."""
    from stillroom.leaderboard import aggregate_seeds, sample_scores, verdicts_against

    by_subject: dict[str, list[SubjectResults]] = {}
    for outcome in outcomes:
        by_subject.setdefault(outcome.subject, []).append(outcome)
    evaluations: list[Evaluation] = []
    lineages: dict[str, Lineage] = {}
    scores: dict[tuple[str, str], dict[str, Any]] = {}  # (evaluator, metric) -> subject -> seed -> item -> score
    higher: dict[tuple[str, str], bool] = {}
    for subject, runs in by_subject.items():
        first = runs[0].lineage
        seeds = [seed for r in runs for seed in r.lineage.seeds or ()]
        extra = first.extra
        if len(runs) > 1:
            extra = {**(extra or {}), "by_seed": {str(r.lineage.seeds[0]): {"info": r.lineage.extra,
                                                                              "path": r.lineage.path or ""}
                                                  for r in runs}}
        lineages[subject] = replace(first, seeds=tuple(seeds), extra=extra, path=first.path or "",
                                    budget={c: _mean([r.lineage.budget.get(c) for r in runs]) for c in BUDGET_COLUMNS})
        per_run = [{e.evaluator: e for e in r.evaluations} for r in runs]
        for evaluation in runs[0].evaluations:
            label = evaluation.evaluator
            metrics = []
            for metric in evaluation.metrics:
                name = metric.metric
                per_seed, seed_samples, per_seed_scores = {}, {}, {}
                for run, found_in in zip(runs, per_run):
                    key = str(run.lineage.seeds[0]) if run.lineage.seeds else "0"
                    found = next((m for m in found_in[label].metrics if m.metric == name), None)
                    if found is None:  # this seed's evaluation did not report the metric
                        per_seed_scores = None
                        continue
                    per_seed[key] = found.value
                    seed_samples[key] = found_in[label].samples_path
                    got = sample_scores(seed_samples[key], name, found.value) if seed_samples[key] else None
                    if per_seed_scores is not None:
                        per_seed_scores = {**per_seed_scores, key: got} if got is not None else None
                aggregated: dict[str, Any] = {}
                if len(runs) > 1:
                    aggregated.update(aggregate_seeds(per_seed, per_seed_scores, resamples=resamples), stderr=None)
                elif metric.ci_low is None and per_seed_scores:
                    aggregated.update(aggregate_seeds(per_seed, per_seed_scores, resamples=resamples))
                aggregated.update(per_seed=per_seed if seeds else None, seed_samples=seed_samples if seeds else None,
                                  seeds=seeds, samples_path=seed_samples[next(iter(seed_samples))])
                metrics.append(metric.model_copy(update=aggregated))
                scores.setdefault((label, name), {})[subject] = per_seed_scores
                higher[(label, name)] = metric.higher_is_better
            evaluations.append(replace(evaluation, metrics=tuple(metrics), seed=None,
                                       samples_path=metrics[0].samples_path if metrics else None,
                                       wall_seconds=_mean([e[label].wall_seconds for e in per_run])))
    reference_model = f"{run_name}/{reference}" if reference in by_subject else None
    for (label, name), by_entry in scores.items():
        usable = {subject: s for subject, s in by_entry.items() if s}
        compared = verdicts_against(reference, usable, higher_is_better=higher[(label, name)],
                                    resamples=resamples) if reference in usable else {}
        for index, evaluation in enumerate(evaluations):
            if evaluation.evaluator != label:
                continue
            evaluations[index] = replace(evaluation, metrics=tuple(
                m.model_copy(update={"reference": reference_model, **compared.get(evaluation.subject, {})})
                if m.metric == name else m for m in evaluation.metrics))
    return evaluations, lineages


def record_run(store: ResultsStore, run: RecordedRun, evaluations: Sequence[Evaluation],
               lineages: Mapping[str, Lineage]) -> list[dict[str, Any]]:
    """Write one finished run's models (one per subject, from ``lineages``) and results (one per evaluation and
    metric); idempotent within the run. Returns the run's rows."""
    store.add_run(run.id, run.name, spec_hash=run.spec_hash, spec=run.spec_json(), run_dir=str(run.dir.root))
    ids: dict[str, int] = {}
    for evaluation in evaluations:
        subject = evaluation.subject
        if subject not in ids:
            lineage = lineages[subject]
            ids[subject] = store.add_model(
                run.id, run.model_name(subject), lineage.role, method=lineage.method, options=lineage.options,
                teacher=lineage.teacher, data=lineage.data, spec_hash=run.spec_hash, path=lineage.path,
                extra=lineage.extra, seeds=list(lineage.seeds) if lineage.seeds is not None else None,
                parent_run=lineage.parent_run,
                **{c: lineage.budget.get(c) for c in BUDGET_COLUMNS})
        for metric in evaluation.metrics:
            store.add_result(run.id, ids[subject], evaluation.evaluator, metric.metric, metric.value, n=metric.n,
                             stderr=metric.stderr, ci_low=metric.ci_low, ci_high=metric.ci_high,
                             higher_is_better=metric.higher_is_better, evaluator_version=evaluation.version,
                             samples_path=metric.samples_path or evaluation.samples_path, seeds=metric.seeds,
                             per_seed=metric.per_seed, seed_samples=metric.seed_samples,
                             **metric.model_dump(include=set(COMPARISON_FIELDS)))
    return store.rows(run_id=run.id, latest=False)


# ---------------------------------------------------------------------------------------------------------
# The results store: the SQLite tables of runs, models (with their lineage) and results. Only this part of the
# module speaks SQL; ``record_run`` above decides what a run records.


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
# and the comparison with the run's reference (``leaderboard.verdicts_against``).
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
