"""The job a method runs in: its roles, data and budget, its stages and their seeds, and what it consumed.

``MethodJob`` is the core's implementation of ``stillroom.Job``. An entry's stages live under one prefix
(``entry_stage_prefix``); every stage reseeds Python, NumPy and torch from ``derive_seed(entry seed, stage
name)`` before it starts, so a stage's result depends only on its method, options, seed and data, never on which
stages ran before it in the process, on ``--resume`` or on ``--jobs``. Each stage records the API calls, tokens,
cost and wall time it used (``endpoint_usage``), and ``MethodJob.summary`` sums them over the entry: the one
budget summary the leaderboard shows.

This module neither schedules entries nor evaluates them (``core/runs.py`` does); it writes only through the
run folder (``core/rundir.py``).
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stillroom.context import Context
from stillroom.errors import UserError
from stillroom.rundir import RunDirectory, naming, process_rank, records_stage
from stillroom.results import evaluate_subject
from stillroom.roles import Component, Evaluator, MetricValue, Student
from stillroom.specs import Budget
from stillroom.store import BUDGET_COLUMNS


# ---------------------------------------------------------------------------------------------------------
# Seeds.

def derive_seed(seed: int, *names: str) -> int:
    """A 31-bit seed from ``seed`` and ``names`` (stable across processes and Python versions)."""
    text = "\x1f".join([str(int(seed)), *names])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (when they are imported) with ``seed``."""
    import sys

    random.seed(seed)
    if "numpy" in sys.modules:
        import numpy

        numpy.random.seed(seed % (2**32))
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------
# Stages, their accounting, and the job.

def entry_stage_prefix(kind: str, label: str, seed: int, seeded: bool) -> str:
    """Where an entry's stages live: ``methods/<label>/`` (``kind`` "methods") or ``eval/<label>/``, with a
    ``seed<s>/`` level when the run trains several seeds. The one place that spells this layout."""
    return f"{kind}/{label}/seed{seed}" if seeded else f"{kind}/{label}"


def accounted_endpoints(endpoints: dict[str, Any], teacher) -> dict[str, Any]:
    """Every endpoint whose calls a run accounts for, by name: the spec's ``endpoints`` and, as ``teacher``, the
    teacher's own when it talks through none of them (an in-process hf teacher)."""
    found = dict(endpoints)
    teacher_endpoint = teacher.endpoint if teacher is not None else None
    if teacher_endpoint is not None and all(teacher_endpoint is not e for e in endpoints.values()):
        found["teacher"] = teacher_endpoint
    return found


def endpoint_usage(endpoints: list[Any]) -> dict[str, float]:
    """Calls (cached or paid), tokens and cost so far, summed over ``endpoints``."""
    total = {"calls": 0.0, "paid": 0.0, "tokens": 0.0, "cost": 0.0}
    for endpoint in endpoints:
        stats = endpoint.stats
        total["calls"] += stats.get("requests", 0) + stats.get("cache_hits", 0)
        total["paid"] += stats.get("requests", 0)
        total["tokens"] += stats.get("prompt_tokens", 0) + stats.get("completion_tokens", 0) + stats.get("cached_tokens", 0)
        total["cost"] += stats.get("cost", 0.0) or 0.0
    return total


@dataclass
class MethodJob:
    """What a method gets: the roles, the data, the budget, and resumable stages under its own prefix.

    ``seed`` is this entry's seed; ``seeded`` says whether the run trains several seeds (the seed is then part
    of every stage path). Every stage reseeds Python, NumPy and torch from ``stage_seed(name)`` first, so an
    entry's result does not depend on what ran before it in the process."""

    label: str
    method: Component
    teacher: Any
    student: Student
    data: dict[str, list[dict[str, Any]]]
    budget: Budget
    seed: int
    run_dir: RunDirectory
    context: Context
    info: dict[str, Any] = field(default_factory=dict)
    seeded: bool = False

    @property
    def prefix(self) -> str:
        """This entry's stage folder, relative to ``stages/`` (``methods/<label>`` or ``methods/<label>/seed<s>``)."""
        return entry_stage_prefix("methods", self.label, self.seed, self.seeded)

    def _name(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def stage_path(self, name: str = "") -> Path:
        """The folder of this entry's stage ``name`` (of the entry itself when empty)."""
        return self.run_dir.stage_path(self._name(name) if name else self.prefix)

    def stage_metrics(self, name: str) -> dict[str, Any]:
        """The recorded metrics of this entry's finished stage ``name`` ({} when it has not finished)."""
        return self.run_dir.stage_metrics(self._name(name))

    def stage_seed(self, name: str) -> int:
        """The seed of stage ``name``: from the entry's seed and the stage's name within the entry (not its label
        or folder, so renaming an entry or adding seeds to a spec does not change what it trains)."""
        return derive_seed(self.seed, name)

    def checkpoint_dir(self, name: str) -> Path:
        """A folder for mid-stage checkpoints of stage ``name``: outside the stage's ``.partial`` folder (which a
        restarted stage deletes), so a killed stage can continue from it; removed once the stage is done."""
        folder = self.run_dir.root / "checkpoints" / self._name(name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def train_records(self) -> list[dict[str, Any]]:
        """The budget's training problems: the first ``budget.train_examples`` records of the train split (all
        when unset), the same ids for every method and seed, in an order fixed by this entry's seed alone."""
        rows = self.data.get("train") or []
        if not rows:
            raise UserError("the data has no 'train' split, or it is empty", f"methods[{self.label}]")
        chosen = list(rows[:self.budget.train_examples] if self.budget.train_examples else rows)
        random.Random(derive_seed(self.seed, "train_records")).shuffle(chosen)
        return chosen

    def _endpoints(self) -> list[Any]:
        return list(accounted_endpoints(self.context.endpoints, self.teacher).values())

    def stage(self, name: str, produce: Callable[[Path], dict | None]) -> Path:
        """Run this entry's stage ``name`` (see ``RunDirectory.stage``), seeded from ``stage_seed(name)``; its
        metrics gain the API calls, tokens and cost it used, and its wall time (the budget columns a stage
        measures here; the training engine reports the others, and ``summary`` sums them per entry)."""
        def counted(folder: Path):
            seed_everything(self.stage_seed(name))
            before, start = endpoint_usage(self._endpoints()), time.perf_counter()
            metrics = dict(produce(folder) or {})
            after = endpoint_usage(self._endpoints())
            metrics.setdefault("teacher_calls", int(after["calls"] - before["calls"]))
            metrics.setdefault("teacher_calls_paid", int(after["paid"] - before["paid"]))
            metrics.setdefault("teacher_tokens", int(after["tokens"] - before["tokens"]))
            metrics.setdefault("cost", round(after["cost"] - before["cost"], 6))
            metrics.setdefault("wall_seconds", round(time.perf_counter() - start, 3))
            # kept under its old name for readers of earlier stage.json files
            metrics.setdefault("teacher_requests", metrics["teacher_calls_paid"])
            return metrics

        path = self.run_dir.stage(self._name(name), counted)
        checkpoints = self.run_dir.root / "checkpoints" / self._name(name)
        if process_rank() == 0 and checkpoints.exists() and self.run_dir.is_done(self._name(name)):
            shutil.rmtree(checkpoints, ignore_errors=True)
        return path

    def jsonl_stage(self, name: str, compute: Callable[[], list[dict]]) -> list[dict]:
        """Records computed once in this entry's stage ``name`` (counted like any stage) and kept as JSON lines."""
        return records_stage(self.stage, name, compute)

    def model_stage(self, name: str, train: Callable[[Student, Path], dict | None]) -> Student:
        """Train ``self.student`` with ``train(student, folder)`` and save it; on resume, load it instead."""
        def produce(folder: Path):
            metrics = train(self.student, folder) or {}
            with naming(folder / "model"):
                self.student.save(folder / "model")
            return metrics

        path = self.stage(name, produce)
        return self.student.load(path / "model")

    def evaluate(self, model: Student, evaluator: Evaluator, stage: str, *, name: str) -> list[MetricValue]:
        """Score ``model`` with ``evaluator`` in this entry's stage ``stage`` (``results.evaluate_subject``)."""
        evaluation = evaluate_subject(self, name, model, stage, evaluator, "method", stage=stage, seed=self.seed)
        return list(evaluation.metrics)

    def summary(self) -> dict[str, Any]:
        """The budget columns (``BUDGET_COLUMNS``) summed over this entry's finished stages; a column no stage
        recorded is None rather than 0, so "not measured" never reads as "free"."""
        totals: dict[str, float | None] = dict.fromkeys(BUDGET_COLUMNS)
        for stage_file in sorted(self.stage_path().rglob("stage.json")):
            metrics = json.loads(stage_file.read_text())
            for column in BUDGET_COLUMNS:
                value = metrics.get(column)
                if column == "wall_seconds" and value is None:
                    value = metrics.get("seconds")  # stages recorded before wall_seconds existed
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    totals[column] = (totals[column] or 0) + value
        return {column: (round(value, 6) if isinstance(value, float) else value) for column, value in totals.items()}
