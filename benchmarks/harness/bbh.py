"""The ``bbh`` evaluator: BIG-Bench Hard through lm-eval, in lm-eval's zero-shot protocol or in Lion's.

It writes its task files (``bbh_tasks``), runs them with the ``lm_eval`` evaluator and renames the rows.

Reported metrics: ``bbh/acc`` (the size-weighted mean over tasks of exact match: flexible-extract for
``lm_eval``, the first option letter for ``lion``), ``bbh/<task>/acc`` per task, and for ``lm_eval`` also
``bbh/<task>/exact_match,strict-match``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stillroom import EvalResult
from stillroom.benchmarks.harness import bbh_tasks
from stillroom.benchmarks.harness.benchmark import HarnessOptions, Names, VariantBenchmark


class BbhConfig(HarnessOptions):
    variant: Literal["lm_eval", "lion"] = Field("lm_eval", description="'lm_eval': lm-eval's bbh_zeroshot (27 "
                                                "tasks, exact match after its filters); 'lion': the 23 "
                                                "multiple-choice tasks, first option letter vs gold letter")
    tasks: Names = Field(None, description="only these BBH tasks (e.g. ['snarks', 'navigate']); default: all of "
                                           "the variant's")
    data_dir: str | None = Field(None, description="local BBH mirror in the upstream layout (tasks/<task>.json); "
                                                   "default: <data root>/bbh, else lm-eval's hub dataset")
    max_gen_toks: int | None = Field(None, gt=0, description="cap on generated tokens per answer (default: the "
                                                             "protocol's: lm_eval 256, lion 32)")


class BbhEvaluator(VariantBenchmark):
    """BIG-Bench Hard, zero-shot: lm-eval's protocol or Lion's multiple-choice one."""

    name = "bbh"
    Config = BbhConfig
    mirror, label, task_files = "bbh", "BBH", bbh_tasks

    def available_tasks(self) -> list[str]:
        return bbh_tasks.tasks_for(self.config.variant)

    def unknown_task_hint(self, task: str, available: list[str]) -> str:
        return " (free-form tasks are not in the lion variant)" if task in bbh_tasks.FREE_FORM else ""

    def report(self, folder, result: EvalResult) -> EvalResult:
        """lm-eval's task names become ``bbh`` and ``bbh/<task>``; the headline metric becomes ``acc``."""
        variant = self.config.variant
        return folder.report(result, "bbh", metric={bbh_tasks.headline_key(variant): "acc"},
                             details={"variant": variant, "examples_per_task": folder.counts})
