"""Results as typed records, from an evaluator's output to the rows of the results store.

A run produces one ``SubjectResults`` per model and seed: the model's ``Lineage`` (what it came from and what
it consumed) and one ``Evaluation`` per evaluator (``evaluate_subject``, a resumable stage). ``over_seeds``
turns them into one lineage per model and one evaluation per model and evaluator: the mean over seeds with its
interval and the paired comparison with the run's reference entry (``core/significance.py``). ``record_run``
writes evaluations and lineages to the store; ``stillroom run`` and ``stillroom eval`` both record through it.

This module computes and records results; it trains nothing, and it reaches SQLite only through
``core/store.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

from pydantic import ConfigDict

from stillroom.roles import Component, MetricValue, Subject
from stillroom.rundir import RunDirectory, write_json_atomic, write_jsonl_atomic
from stillroom.store import BUDGET_COLUMNS, COMPARISON_FIELDS

if TYPE_CHECKING:
    from stillroom.store import ResultsStore


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
    seeds with their interval (``significance.aggregate_seeds``), each seed's value and samples, and, for every
    model but ``reference``, the comparison with it (Holm across models, per evaluator and metric). The budget
    consumed is the mean over seeds. Teacher and base outcomes have no seed."""
    from stillroom import significance

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
                    got = significance.sample_scores(seed_samples[key], name, found.value) \
                        if seed_samples[key] else None
                    if per_seed_scores is not None:
                        per_seed_scores = {**per_seed_scores, key: got} if got is not None else None
                aggregated: dict[str, Any] = {}
                if len(runs) > 1:
                    aggregated.update(significance.aggregate_seeds(per_seed, per_seed_scores, resamples=resamples),
                                      stderr=None)
                elif metric.ci_low is None and per_seed_scores:
                    aggregated.update(significance.aggregate_seeds(per_seed, per_seed_scores, resamples=resamples))
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
        compared = significance.verdicts_against(reference, usable, higher_is_better=higher[(label, name)],
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
