"""The ``step_by_step`` method (Hsieh et al., 2023) and its baselines, and the student it returns.

Multi-task mode trains on ``predict: <input> -> label`` and ``explain: <input> -> rationale`` with
``L_label + lambda * L_rationale`` (or the reference code's convex mix); ``label_only`` mode is standard
fine-tuning (gold labels) or task distillation (teacher labels) on the same data budget. Rationales and
teacher labels come from the data (e.g. the PaLM ones) or from the spec's teacher through the rationale
extractor. The trained student answers plain prompts: it adds the label prefix itself when it generates.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from stillroom import (GenerationRequest, Method, MethodConfig, MethodJob, Student, UserError, read_jsonl,
                       write_jsonl_atomic)

from stillroom.plugins.step_by_step.extraction import extract_rationales
from stillroom.plugins.step_by_step.prompts import PromptOptions
from stillroom.plugins.step_by_step.training import TrainingSettings, train_step_by_step

PREFIX_FILE = "step_by_step.json"


class PrefixedStudent(Student):
    """A trained step-by-step student: the wrapped student with the task prefix added to every prompt it
    answers, in the prompt format it was trained on."""

    name = "step_by_step_prefixed"

    def __init__(self, inner: Student, prefix: str, prompt_format: str = "raw"):
        super().__init__(None, inner.context)
        self.inner = inner
        self.prefix = prefix
        self.prompt_format = prompt_format

    # The wrapped student's declared capabilities. Not its endpoint: that answers without the prefix, so this
    # student keeps the role's None and evaluators generate through ``generate``.
    model = property(lambda self: self.inner.model)
    tokenizer = property(lambda self: self.inner.tokenizer)
    path = property(lambda self: self.inner.path)
    is_encoder_decoder = property(lambda self: self.inner.is_encoder_decoder)

    def __repr__(self) -> str:
        return f"<student {self.inner.name!r} with prefix {self.prefix!r}>"

    def fresh(self) -> "PrefixedStudent":
        return PrefixedStudent(self.inner.fresh(), self.prefix, self.prompt_format)

    def save(self, path) -> None:
        self.inner.save(path)
        Path(path, PREFIX_FILE).write_text(json.dumps({"prefix": self.prefix, "prompt_format": self.prompt_format},
                                                      indent=2) + "\n")

    def load(self, path) -> "PrefixedStudent":
        return self.restore(self.inner, path)

    @classmethod
    def restore(cls, inner: Student, path) -> "PrefixedStudent":
        """``inner``'s kind loaded from ``path``, with the prefix settings saved next to it."""
        settings_file = Path(path, PREFIX_FILE)
        if not settings_file.is_file():
            raise UserError(f"no {PREFIX_FILE} in the saved model: not a step-by-step student", str(path))
        settings = json.loads(settings_file.read_text())
        return cls(inner.load(path), settings["prefix"], settings.get("prompt_format", "raw"))

    def rewrite(self, request: GenerationRequest) -> GenerationRequest:
        """The request the inner student answers: the prefix added, in the trained prompt format."""
        if request.messages is None:
            text = self.prefix + (request.prompt or "")
        elif self.prompt_format == "chat":
            messages = [dict(m) for m in request.messages]
            last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=None)
            if last_user is None:
                messages.append({"role": "user", "content": self.prefix})
            else:
                messages[last_user]["content"] = self.prefix + str(messages[last_user].get("content", ""))
            return request.model_copy(update={"messages": messages, "prompt": None})
        else:
            text = self.prefix + "\n\n".join(str(m.get("content", "")) for m in request.messages
                                             if m.get("role") != "system")
        if self.prompt_format == "chat":
            return request.model_copy(update={"messages": [{"role": "user", "content": text}], "prompt": None})
        return request.model_copy(update={"prompt": text, "messages": None})

    def generate(self, requests: list[GenerationRequest], *, description: str | None = None):
        return self.inner.generate([self.rewrite(r) for r in requests], description=description)


@contextmanager
def cpu_threads(count: int | None):
    """Run with ``count`` torch CPU threads, then restore the previous setting."""
    if count is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class StepByStepConfig(MethodConfig):
    mode: Literal["multitask", "label_only"] = Field(
        "multitask", description="'multitask': label and rationale prediction (distilling step-by-step); "
                                 "'label_only': the baselines (standard fine-tuning or task distillation)")
    labels: Literal["gold", "teacher"] = Field(
        "gold", description="label targets: the data's gold labels, or the teacher's labels "
                            "(task distillation; from the data's teacher_label or the extracted ones)")
    rationales: Literal["data", "teacher"] = Field(
        "data", description="where rationales and teacher labels come from: the data's 'rationale' / "
                            "'teacher_label' fields (e.g. PaLM's), or the spec's teacher through few-shot "
                            "CoT prompts")
    weighting: Literal["paper", "convex"] = Field(
        "paper", description="'paper': L_label + rationale_weight * L_rationale; 'convex' (reference code): "
                             "alpha * L_label + (1 - alpha) * L_rationale")
    rationale_weight: float = Field(1.0, ge=0, description="lambda of the paper's weighting")
    alpha: float = Field(0.5, ge=0, le=1, description="label weight of the convex weighting")
    label_prefix: str = Field("predict: ", description="task prefix of the label task, also used at inference")
    rationale_prefix: str = Field("explain: ", description="task prefix of the rationale task")
    prompt_format: Literal["raw", "chat"] = Field(
        "raw", description="how the student sees a prompt: raw text, or one user message through its chat "
                           "template (causal models that have one); generation uses the same")
    extraction: PromptOptions = Field(default_factory=PromptOptions,
                                      description="prompts for rationale extraction when rationales = 'teacher'")
    require_correct: bool = Field(False, description="with rationales = 'teacher': keep only answers whose "
                                                     "label matches the gold label")
    steps: int | None = Field(None, ge=1, description="optimizer steps when the spec's budget sets none "
                                                      "(default 300)")
    batch_size: int | None = Field(None, ge=1, description="problems per step (each seen by both tasks) when the "
                                                           "budget sets none (default 16)")
    learning_rate: float | None = Field(None, gt=0, description="peak learning rate when the budget sets none "
                                                                "(default 5e-4)")
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps before the linear decay")
    max_length: int = Field(512, ge=8, description="most tokens of one input plus target")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm (0: none)")
    cpu_threads: int | None = Field(None, ge=1, description="torch CPU threads while training (tiny models on a "
                                                           "busy machine train fastest with 1); default: leave as is")

    @model_validator(mode="after")
    def _check(self):
        if self.mode == "label_only" and self.labels == "gold" and self.require_correct:
            raise ValueError("require_correct filters teacher answers; label_only with gold labels asks none")
        if self.label_prefix == self.rationale_prefix and self.mode == "multitask":
            raise ValueError(f"label_prefix and rationale_prefix must differ (both {self.label_prefix!r})")
        return self


class StepByStep(Method):
    """Distilling step-by-step: trains the student to predict labels and, as a second task, rationales."""

    name = "step_by_step"
    Config = StepByStepConfig
    # The kind runs without a teacher (precomputed rationales and labels); an entry that extracts
    # rationales from the teacher says so on its instance, which the run checks when it builds it.
    uses_teacher = False

    def __init__(self, config=None, context=None):
        super().__init__(config, context)
        self.uses_teacher = self.config.rationales == "teacher" and self.needs_teacher_outputs

    @property
    def needs_teacher_outputs(self) -> bool:
        return self.config.mode == "multitask" or self.config.labels == "teacher"

    def settings(self, job: MethodJob, seed: int) -> TrainingSettings:
        from stillroom.training import budget_value

        cfg = self.config
        shared_warmup = job.budget.warmup_ratio
        if shared_warmup is not None and cfg.warmup_steps:
            raise UserError(f"warmup_steps = {cfg.warmup_steps} conflicts with budget.warmup_ratio = {shared_warmup}; "
                            "the budget applies to every method, so remove one of them",
                            f"methods[{job.label}].warmup_steps")
        return TrainingSettings(
            multitask=cfg.mode == "multitask", steps=budget_value(job, "steps", cfg.steps, 300),
            batch_size=budget_value(job, "batch_size", cfg.batch_size, 16),
            learning_rate=budget_value(job, "learning_rate", cfg.learning_rate, 5e-4),
            seed=seed, weighting=cfg.weighting, rationale_weight=cfg.rationale_weight, alpha=cfg.alpha,
            label_prefix=cfg.label_prefix if cfg.mode == "multitask" else "", rationale_prefix=cfg.rationale_prefix,
            prompt_format=cfg.prompt_format, max_length=cfg.max_length, warmup_steps=cfg.warmup_steps,
            warmup_ratio=shared_warmup,
            max_grad_norm=cfg.max_grad_norm)

    def select(self, job: MethodJob) -> list[dict[str, Any]]:
        """The training problems: the budget's (``job.train_records()``: the same ids, in the same order, as
        every other method). With data rationales, problems lacking what this entry trains on are dropped."""
        records = job.train_records()
        if self.config.rationales == "data":
            records = [r for r in records if self._usable(r)]
            if not records:
                raise UserError(f"no training record has the fields this entry needs ({', '.join(self._fields())})",
                                f"methods[{job.label}]")
        return records

    def _fields(self) -> list[str]:
        fields = ["prompt", "answer" if self.config.labels == "gold" else "teacher_label"]
        if self.config.mode == "multitask":
            fields.append("rationale")
        return fields

    def _usable(self, record: dict[str, Any]) -> bool:
        fields = self._fields()
        if self.config.labels == "gold" and not str(record.get("answer") or "").strip():
            fields = [f if f != "answer" else "target" for f in fields]
        return all(isinstance(record.get(f), str) and record[f].strip() for f in fields)

    def examples(self, job: MethodJob, records: list[dict[str, Any]]) -> list[dict[str, str]]:
        out = []
        for record in records:
            if not self._usable(record):
                continue
            if self.config.labels == "teacher":
                label = record["teacher_label"]
            else:
                label = record.get("answer") if str(record.get("answer") or "").strip() else record["target"]
            out.append({"id": record.get("id"), "input": record["prompt"], "label": label,
                        "rationale": record.get("rationale") or ""})
        if not out:
            raise UserError("no usable training examples (every teacher answer failed to parse or was filtered)",
                            f"methods[{job.label}]")
        return out

    def run(self, job: MethodJob) -> Student:
        records = self.select(job)
        if self.config.rationales == "teacher" and self.needs_teacher_outputs:
            if job.teacher is None:
                raise UserError("rationales = 'teacher' needs a [teacher] table", f"methods[{job.label}]")

            def annotate(folder: Path) -> dict:
                kept, stats = extract_rationales(job.teacher.generate, records, self.config.extraction,
                                                 require_correct=self.config.require_correct,
                                                 description=f"{job.label}: teacher rationales")
                write_jsonl_atomic(folder / "records.jsonl", kept)
                return {"records": len(kept), **stats}

            records = read_jsonl(job.stage("rationales", annotate) / "records.jsonl")
        from stillroom.training import ids_digest, stage_settings

        examples = self.examples(job, records)
        stage = stage_settings(job, "train")
        settings = self.settings(job, stage.seed)
        inner = job.student

        def produce(folder: Path) -> dict:
            with cpu_threads(self.config.cpu_threads):
                metrics = train_step_by_step(inner.model, inner.tokenizer, examples, settings,
                                             is_encoder_decoder=inner.is_encoder_decoder,
                                             folder=folder, checkpoint_dir=stage.checkpoint_dir,
                                             checkpoint_steps=stage.checkpoint_steps, report_to=stage.report_to,
                                             description=f"{job.label} train")
            metrics.update(ids_digest(examples))
            write_jsonl_atomic(folder / "examples.jsonl", examples)
            PrefixedStudent(inner, settings.label_prefix, settings.prompt_format).save(folder / "model")
            return {**metrics, "mode": self.config.mode, "labels": self.config.labels,
                    "rationales": self.config.rationales, "weighting": self.config.weighting}

        folder = job.stage("train", produce)
        return PrefixedStudent.restore(inner, folder / "model")
