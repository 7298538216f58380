"""The two baselines every distillation method is compared with.

``sft`` fine-tunes the student on the gold targets and never asks the teacher. ``seqkd`` (sequence-level
knowledge distillation, Kim & Rush 2016) has the teacher answer the same training prompts greedily and
fine-tunes on those answers. Both take their training problems, steps, batch size and learning rate from the
run's shared budget, so they differ only in where the targets come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from stillroom import GenerationRequest, Method, MethodConfig, MethodJob, Student, UserError

DEFAULTS = {"train_examples": None, "steps": 200, "batch_size": 16, "learning_rate": 1e-4}


class TrainingOptions(MethodConfig):
    """Options shared by the baselines; the budget fields are used only where the spec's [budget] is silent."""

    train_examples: int | None = Field(None, ge=1, description="training records to use (the first N of the "
                                                               "train split); default: the budget's, else all")
    steps: int | None = Field(None, ge=1, description="optimizer steps; default: the budget's, else 200")
    batch_size: int | None = Field(None, ge=1, description="records per step; default: the budget's, else 16")
    learning_rate: float | None = Field(None, gt=0, description="peak learning rate (linear decay); default: "
                                                                "the budget's, else 1e-4")
    max_length: int = Field(512, ge=8, description="longest training sequence in tokens (prompt + target)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of steps with linear learning-rate warm-up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")


@dataclass(frozen=True)
class Plan:
    """The budget a method entry actually trains with."""

    train_examples: int | None
    steps: int
    batch_size: int
    learning_rate: float


def resolve_budget(job: MethodJob, options: TrainingOptions) -> Plan:
    """The spec's budget, else the entry's own option, else the default (a conflict between the budget and
    an option is reported by the core, once for every method)."""
    from stillroom.training import budget_value

    return Plan(**{name: budget_value(job, name, getattr(options, name), default)
                   for name, default in DEFAULTS.items()})


def training_records(job: MethodJob, plan: Plan) -> list[dict[str, Any]]:
    """The budget's training problems (every method takes the same ones, in the same order)."""
    records = job.train_records()
    return records[:plan.train_examples] if plan.train_examples else records


def fit(job: MethodJob, options: TrainingOptions, plan: Plan, records: list[dict[str, Any]]) -> Student:
    """Fine-tune ``job.student`` on ``records`` as the resumable stage ``train`` (through the engine)."""
    from stillroom.training import budget_value, ids_digest, stage_settings

    settings = stage_settings(job, "train")
    warmup_ratio = budget_value(job, "warmup_ratio", options.warmup_ratio, 0.0)

    def train(student: Student, folder) -> dict[str, Any]:
        result = student.fit(records, steps=plan.steps, batch_size=plan.batch_size,
                             learning_rate=plan.learning_rate, seed=settings.seed, max_length=options.max_length,
                             warmup_ratio=warmup_ratio, weight_decay=options.weight_decay, folder=folder,
                             checkpoint_dir=settings.checkpoint_dir, checkpoint_steps=settings.checkpoint_steps,
                             report_to=settings.report_to, description=f"{job.label} train")
        summary = {k: v for k, v in result.items() if k != "losses"}
        return {**summary, **ids_digest(records), "records": len(records), "batch_size": plan.batch_size,
                "learning_rate": plan.learning_rate}

    return job.model_stage("train", train)


class SFT(Method):
    """Supervised fine-tuning of the student on the gold targets (no teacher)."""

    name = "sft"
    uses_teacher = False
    baseline = True

    class Config(TrainingOptions):
        pass

    def run(self, job: MethodJob) -> Student:
        plan = resolve_budget(job, self.config)
        return fit(job, self.config, plan, training_records(job, plan))


class SeqKD(Method):
    """Sequence-level KD: the teacher answers the training prompts greedily and the student is fine-tuned on
    those answers instead of the gold targets."""

    name = "seqkd"
    baseline = True

    class Config(TrainingOptions):
        max_new_tokens: int = Field(256, ge=1, description="longest teacher answer")
        system_prompt: str | None = Field(None, description="a system message sent to the teacher before each prompt")

    def teacher_requests(self, records: list[dict[str, Any]]) -> list[GenerationRequest]:
        requests = []
        for row in records:
            messages = list(row.get("messages") or [{"role": "user", "content": str(row["prompt"])}])
            if self.config.system_prompt:
                messages = [{"role": "system", "content": self.config.system_prompt}, *messages]
            requests.append(GenerationRequest(messages=messages, max_tokens=self.config.max_new_tokens,
                                              temperature=0.0))
        return requests

    def run(self, job: MethodJob) -> Student:
        plan = resolve_budget(job, self.config)
        records = training_records(job, plan)

        def answer() -> list[dict[str, Any]]:
            completions = job.teacher.generate(self.teacher_requests(records), description="seqkd teacher answers")
            out = []
            for row, answers in zip(records, completions):
                text = answers[0].text if answers else ""
                kept = {k: row[k] for k in ("id", "prompt", "messages") if k in row}
                out.append({**kept, "target": text, "gold_target": row.get("target"),
                            "finish_reason": answers[0].finish_reason if answers else None})
            return out

        taught = [r for r in job.jsonl_stage("teacher_answers", answer) if r["target"].strip()]
        if not taught:
            raise UserError("the teacher gave only empty answers; nothing to train on", f"methods[{job.label}]")
        return fit(job, self.config, plan, taught)
