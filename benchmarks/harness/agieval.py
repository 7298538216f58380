"""The ``agieval`` evaluator: AGIEval's 8 English multiple-choice tasks through lm-eval, in lm-eval's
log-likelihood protocol (``agieval_nous``) or in Lion's generative one.

It writes its task files (``agieval_tasks``), runs them with the ``lm_eval`` evaluator and renames the rows.

Reported metrics: ``agieval/acc`` and, for ``lm_eval``, ``agieval/acc_norm`` (size-weighted means over the
tasks), and the same per task as ``agieval/<task>/acc``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from stillroom import EvalResult
from stillroom.benchmarks.harness import agieval_tasks
from stillroom.benchmarks.harness.benchmark import HarnessOptions, VariantBenchmark


class AgievalConfig(HarnessOptions):
    variant: Literal["lm_eval", "lion"] = Field("lm_eval", description="'lm_eval': lm-eval's agieval_nous "
                                                "(log-likelihood acc/acc_norm); 'lion': the same prompts answered "
                                                "by generation, first option letter vs gold letter")
    tasks: list[str] | None = Field(None, description="only these tasks (e.g. ['lsat-ar', 'sat-math']); "
                                                      "default: all 8")
    data_dir: str | None = Field(None, description="local AGIEval mirror in the upstream layout "
                                                   "(v1_1/<task>.jsonl); default: <data root>/agieval, else "
                                                   "lm-eval's hub datasets")
    max_gen_toks: int | None = Field(None, gt=0, description="cap on generated tokens per answer (default: the "
                                                             "protocol's; lion: 32)")

    @field_validator("tasks", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        value = [value] if isinstance(value, str) else value
        return [v.replace("_", "-") if isinstance(v, str) else v for v in value] if value is not None else None


class AgievalEvaluator(VariantBenchmark):
    """AGIEval's English multiple-choice tasks, zero-shot: lm-eval's log-likelihood protocol or Lion's."""

    name = "agieval"
    Config = AgievalConfig
    mirror, label, task_files = "agieval", "AGIEval", agieval_tasks

    def available_tasks(self) -> list[str]:
        return list(agieval_tasks.all_tasks())

    def unknown_task_hint(self, task: str, available: list[str]) -> str:
        return f"; the English multiple-choice tasks are {', '.join(available)}"

    def report(self, folder, result: EvalResult) -> EvalResult:
        """lm-eval's task names become ``agieval`` and ``agieval/<task>``; the aggregated metrics ``acc`` (and
        ``acc_norm``)."""
        variant = self.config.variant
        return folder.report(result, "agieval", metric=agieval_tasks.headline_keys(variant),
                             details={"variant": variant, "examples_per_task": folder.counts})
