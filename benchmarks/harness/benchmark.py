"""What every evaluator of the harness shares: the lm-eval run options, declared once (``HarnessOptions``, the
way lm-eval's task folders ``include:`` one template), and the skeleton of a benchmark that generates lm-eval
tasks (``TaskBenchmark``: pick its tasks, write the task folder, run it with the ``lm_eval`` evaluator, report
lm-eval's rows under the benchmark's own names).

BBH, AGIEval and MMLU are task modules of this one package; they call the ``lm_eval`` evaluator directly, never
through the plugin host.
"""

from __future__ import annotations

import abc

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, model_validator

from stillroom import EvalResult, Evaluator, EvaluatorConfig, Subject, UserError, paths, suggest

if TYPE_CHECKING:
    from stillroom.benchmarks.harness.task_folders import TaskFolder


# A list of names that a spec may also give as one string (``tasks = "snarks"``).
Names = Annotated[list[str] | None, BeforeValidator(lambda value: [value] if isinstance(value, str) else value)]


class HarnessOptions(EvaluatorConfig):
    """How lm-eval runs: the options every harness evaluator takes, passed on under the same names."""

    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples per prompt (default: each task's "
                                                            "own; the lion protocols are zero-shot only)")
    limit: int | float | None = Field(None, gt=0, description="examples per task (a fraction of each task if < 1); "
                                                              "for quick checks only")
    batch_size: int | str = Field(8, description="lm-eval batch size, or 'auto'; API models always use 1")
    device: str = Field("auto", description="device for a model loaded from a path ('auto': cuda when available)")
    max_length: int | None = Field(None, gt=0, description="context length lm-eval truncates prompts to "
                                                           "(default: the model's)")
    apply_chat_template: bool = Field(False, description="render prompts with the model's chat template "
                                                         "(always on for API chat endpoints)")
    fewshot_as_multiturn: bool = Field(False, description="give few-shot examples as chat turns (needs "
                                                          "apply_chat_template); set explicitly because "
                                                          "lm-eval's default changed")
    bootstrap_iters: int = Field(0, ge=0, description="bootstrap iterations for lm-eval's standard errors; 0 "
                                                      "computes closed-form errors of mean metrics from samples")
    log_samples: bool = Field(True, description="keep per-sample records (prompt, answer, scores) in the result")

    @model_validator(mode="after")
    def _multiturn_needs_chat(self):
        if self.fewshot_as_multiturn and not self.apply_chat_template:
            raise ValueError("fewshot_as_multiturn = true needs apply_chat_template = true")
        return self


# The options above, by name: what a task benchmark hands on to the ``lm_eval`` evaluator that runs its folder.
RUN_OPTIONS = tuple(name for name in HarnessOptions.model_fields if name not in EvaluatorConfig.model_fields)


class TaskBenchmark(Evaluator):
    """A benchmark that writes lm-eval tasks from its data and runs them with the ``lm_eval`` evaluator.

    A subclass names its local mirror (``mirror``, ``label``) and implements ``prepare`` (write or reuse its
    ``TaskFolder``), ``source_files`` and ``report`` (lm-eval's result under the benchmark's names)."""

    mirror = ""  # the data mirror's folder under the data root (``<data root>/<mirror>``)
    label = ""  # how messages name the benchmark

    @property
    def _where(self) -> str:
        return f"evaluator[{self.name}]"

    def data_dir(self) -> Path | None:
        """The local mirror to read, or None to use the hub dataset lm-eval uses."""
        return paths.mirror_folder(self.config.data_dir, self.context.data_path(self.mirror), label=self.label,
                                   location=f"{self._where}.data_dir")

    @abc.abstractmethod
    def prepare(self) -> TaskFolder:
        """Write (or reuse) the task files for the configured tasks and data."""

    @abc.abstractmethod
    def report(self, folder: TaskFolder, result: EvalResult) -> EvalResult:
        """lm-eval's ``result`` for ``folder`` under the benchmark's names."""

    def runner(self, folder: TaskFolder) -> Evaluator:
        """The ``lm_eval`` evaluator that runs the generated tasks, with this benchmark's run options."""
        from stillroom.benchmarks.harness.evaluator import LmEvalConfig, LmEvalEvaluator

        options: dict[str, Any] = {"tasks": [folder.group], "include_path": [str(folder.include_dir)],
                                   "include_defaults": False}
        options.update({name: getattr(self.config, name) for name in RUN_OPTIONS})
        max_gen_toks = self.config.max_gen_toks if "max_gen_toks" in type(self.config).model_fields else None
        options["gen_kwargs"] = {"max_gen_toks": max_gen_toks} if max_gen_toks else None
        return LmEvalEvaluator(LmEvalConfig(**options), self.context)

    def evaluate(self, subject: Subject) -> EvalResult:
        folder = self.prepare()
        return self.report(folder, self.runner(folder).evaluate(subject))


class VariantBenchmark(TaskBenchmark):
    """A task benchmark in two protocols (``variant``): lm-eval's own, or the Lion paper's zero-shot one.

    A subclass names its task-files module (``task_files``: ``prepare(variant, tasks, data_dir)`` and
    ``upstream_file(data_dir, task)``) and implements ``available_tasks``."""

    task_files: ModuleType

    @abc.abstractmethod
    def available_tasks(self) -> list[str]:
        """Every task of the configured variant, in the benchmark's order."""

    def unknown_task_hint(self, task: str, available: list[str]) -> str:
        """What the message about an unknown task adds after its suggestion."""
        return ""

    def selected_tasks(self) -> list[str]:
        available = self.available_tasks()
        if self.config.tasks is None:
            return available
        for task in self.config.tasks:
            if task not in available:
                raise UserError(f"unknown {self.label} task {task!r}{suggest(task, available)}"
                                f"{self.unknown_task_hint(task, available)}", f"{self._where}.tasks")
        return [t for t in available if t in self.config.tasks]

    def source_files(self) -> list:
        root = self.data_dir()
        return [self.task_files.upstream_file(root, t) for t in self.selected_tasks()] if root is not None else []

    def prepare(self) -> TaskFolder:
        """Write (or reuse) the task files for the configured variant, tasks and data; the lion protocol is
        zero-shot, so few-shot examples are refused rather than silently dropped."""
        if self.config.variant == "lion" and self.config.num_fewshot:
            raise UserError("the lion protocol is zero-shot; leave num_fewshot unset or 0",
                            f"{self._where}.num_fewshot")
        return self.task_files.prepare(self.config.variant, self.selected_tasks(), self.data_dir())
