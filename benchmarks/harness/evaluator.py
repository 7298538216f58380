"""The ``lm_eval`` evaluator: any lm-evaluation-harness task or group, run in-process on the model under test.

Task YAMLs come from lm-eval's own collection and from ``include_path`` folders (how the task benchmarks of
this package, bbh, agieval and mmlu, hand over the task files they generate with ``task_folders``).
When every requested name is found in the include path the built-in collection is not scanned at all, which
saves seconds per evaluation. lm-eval is imported only when an evaluation runs.
"""

from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from stillroom import EvalResult, Evaluator, Subject, UserError
from stillroom.benchmarks.harness.answer_letters import register_letter_filter
from stillroom.benchmarks.harness.benchmark import HarnessOptions
from stillroom.benchmarks.harness.results import metric_rows, sample_records
from stillroom.benchmarks.harness.subject_model import check_generative, harness_model


class LmEvalConfig(HarnessOptions):
    tasks: list[str] = Field(..., min_length=1, description="lm-eval task, group or tag names (a string or a "
                                                           "list; shell-style wildcards such as 'mmlu_*' work)")
    variant: Literal["lm_eval"] = Field("lm_eval", description="protocol variant; 'lm_eval' runs the tasks exactly "
                                                               "as their YAMLs define them")
    system_instruction: str | None = Field(None, description="system message prepended to every prompt")
    gen_kwargs: dict[str, Any] | None = Field(None, description="generation options overriding the tasks' "
                                                                "(e.g. {max_gen_toks = 32})")
    include_path: list[str] = Field(default_factory=list, description="extra folders of task YAMLs, searched "
                                                                     "before lm-eval's own tasks")
    include_defaults: bool = Field(True, description="also search lm-eval's bundled tasks for names not found "
                                                     "in include_path (a scan of several seconds)")

    @field_validator("tasks", "include_path", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, (str, Path)) else value

    @field_validator("include_path")
    @classmethod
    def _existing_folders(cls, value: list[str]) -> list[str]:
        missing = [p for p in value if not Path(p).expanduser().is_dir()]
        if missing:
            raise ValueError(f"include_path folder(s) not found: {', '.join(missing)}")
        return [str(Path(p).expanduser().resolve()) for p in value]


class LmEvalEvaluator(Evaluator):
    """Runs lm-evaluation-harness tasks or groups on a local model or an OpenAI-compatible endpoint."""

    name = "lm_eval"
    Config = LmEvalConfig

    def task_manager(self):
        """A TaskManager that knows every requested name, and the names with wildcards expanded.

        The include path alone is tried first (no scan of lm-eval's thousands of YAMLs)."""
        from lm_eval.tasks import TaskManager

        include = list(self.config.include_path) or None
        if include or not self.config.include_defaults:
            manager = TaskManager(include_path=include, include_defaults=False)
            names = self._resolve(manager, strict=not self.config.include_defaults)
            if names is not None:
                return manager, names
        manager = TaskManager(include_path=include, include_defaults=True)
        return manager, self._resolve(manager, strict=True)

    def _resolve(self, manager, *, strict: bool) -> list[str] | None:
        known = set(manager.all_tasks)
        names: list[str] = []
        for requested in self.config.tasks:
            if any(ch in requested for ch in "*?["):
                matched = sorted(fnmatch.filter(known, requested))
            else:
                matched = [requested] if requested in known else []
            if not matched:
                if not strict:
                    return None
                close = difflib.get_close_matches(requested, sorted(known), n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise UserError(f"unknown lm-eval task or group {requested!r}{hint}",
                                f"evaluator[{self.name}].tasks")
            names.extend(m for m in matched if m not in names)
        return names

    def run(self, subject: Subject) -> dict[str, Any]:
        """lm-eval's raw result dictionary for ``subject`` (what ``evaluate`` maps to rows)."""
        import lm_eval

        location = f"evaluator[{self.name}]"
        register_letter_filter()
        model = harness_model(subject, batch_size=self.config.batch_size, device=self.config.device,
                              max_length=self.config.max_length, location=location)
        manager, names = self.task_manager()
        if model.is_api:
            check_generative(manager, names, location)
        fill_stderr = self.config.bootstrap_iters == 0
        raw = lm_eval.simple_evaluate(
            model=model.model, model_args=model.model_args, tasks=names, task_manager=manager,
            num_fewshot=self.config.num_fewshot, limit=self.config.limit,
            batch_size=self.config.batch_size if not model.is_api else 1,
            device=model.model_args.get("device") if model.model_args else None,
            bootstrap_iters=self.config.bootstrap_iters,
            log_samples=self.config.log_samples or fill_stderr,
            apply_chat_template=self.config.apply_chat_template or model.is_api,
            fewshot_as_multiturn=self.config.fewshot_as_multiturn,
            system_instruction=self.config.system_instruction, gen_kwargs=self.config.gen_kwargs)
        if raw is None:  # lm-eval returns None on non-zero ranks of a distributed run
            raise UserError("lm-eval returned no results (distributed rank other than 0?)", location)
        raw["stillroom"] = {"tasks": names, "model": model.description, "fill_stderr": fill_stderr}
        return raw

    def evaluate(self, subject: Subject) -> EvalResult:
        raw = self.run(subject)
        return to_eval_result(raw, keep_samples=self.config.log_samples)


def to_eval_result(raw: dict[str, Any], *, keep_samples: bool) -> EvalResult:
    info = raw.get("stillroom", {})
    fill = bool(info.get("fill_stderr"))
    details = {
        "tasks": info.get("tasks"),
        "model": info.get("model"),
        "lm_eval_version": raw.get("lm_eval_version"),
        "versions": raw.get("versions"),
        "n_shot": raw.get("n-shot"),
        "n_samples": raw.get("n-samples"),
        "group_subtasks": raw.get("group_subtasks"),
        "limit": (raw.get("config") or {}).get("limit"),
        "bootstrap_iters": (raw.get("config") or {}).get("bootstrap_iters"),
        "stderr": "closed form from per-sample scores" if fill else "lm-eval",
    }
    return EvalResult(metrics=metric_rows(raw, fill_stderr=fill),
                      samples=sample_records(raw) if keep_samples else [], details=details)
