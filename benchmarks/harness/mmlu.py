"""The ``mmlu`` evaluator: MMLU through lm-eval, with subject, category and overall accuracy.

It writes its task files (``mmlu_tasks``), runs them with the ``lm_eval`` evaluator and renames the rows.

Reported metrics: ``mmlu/acc`` (all questions), ``mmlu/<category>/acc`` for stem, humanities,
social_sciences and other, and ``mmlu/<subject>/acc``; each is lm-eval's log-likelihood accuracy, groups
weighted by the number of questions.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stillroom import EvalResult, UserError, suggest
from stillroom.benchmarks.harness import mmlu_tasks
from stillroom.benchmarks.harness.benchmark import HarnessOptions, Names, TaskBenchmark


class MmluConfig(HarnessOptions):
    variant: Literal["lm_eval"] = Field("lm_eval", description="'lm_eval': lm-eval's mmlu (log-likelihood of "
                                                               "the answer letter, accuracy)")
    subjects: Names = Field(None, description="only these subjects and/or categories (stem, humanities, "
                                              "social_sciences, other); default: all 57")
    num_fewshot: int = Field(5, ge=0, le=5, description="few-shot examples from each subject's dev split")
    data_dir: str | None = Field(None, description="local MMLU mirror in the data.tar layout (test/, dev/ CSVs); "
                                                   "default: <data root>/mmlu, else lm-eval's hub dataset")


class MmluEvaluator(TaskBenchmark):
    """MMLU (57 subjects) with per-subject, per-category and overall accuracy."""

    name = "mmlu"
    Config = MmluConfig
    mirror, label = "mmlu", "MMLU"

    def selected_subjects(self) -> dict[str, str]:
        """Subject -> category for the configured subjects (all by default)."""
        known = mmlu_tasks.subject_categories()
        if self.config.subjects is None:
            return dict(known)
        chosen = set()
        for name in self.config.subjects:
            if name in mmlu_tasks.CATEGORIES:
                chosen.update(s for s, c in known.items() if c == name)
            elif name in known:
                chosen.add(name)
            else:
                hint = suggest(name, [*known, *mmlu_tasks.CATEGORIES])
                raise UserError(f"unknown MMLU subject or category {name!r}{hint}", f"{self._where}.subjects")
        return {s: c for s, c in known.items() if s in chosen}

    def source_files(self) -> list:
        root = self.data_dir()
        if root is None:
            return []
        return [mmlu_tasks.upstream_file(root, s, split) for s in self.selected_subjects()
                for split in mmlu_tasks.SPLITS]

    def prepare(self):
        """Write (or reuse) the task files for the configured subjects and data."""
        return mmlu_tasks.prepare(self.selected_subjects(), self.data_dir())

    def report(self, folder, result: EvalResult) -> EvalResult:
        """lm-eval's names become ``mmlu``, ``mmlu/<category>`` and ``mmlu/<subject>``; ``acc,none`` becomes
        ``acc``."""
        return folder.report(result, "mmlu", metric=lambda key: key.removesuffix(",none"),
                             details={"questions_per_subject": folder.counts})
