"""What the gkd and on_policy methods share: the budget, the TRL config built by the engine's policy, the
training records, and running a built TRL trainer through the engine. (The checks a white-box teacher must pass
are the engine's, in stillroom.training, shared with gkd_rl.)"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stillroom import UserError


@dataclass
class Plan:
    """The effective budget of one training run after the spec's [budget] is applied."""

    steps: int
    batch_size: int
    per_device_batch_size: int
    learning_rate: float
    records: list[dict[str, Any]]

    def metrics(self) -> dict[str, Any]:
        return {"steps_budget": self.steps, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "train_examples": len(self.records)}


def plan(job, options, where: str) -> Plan:
    """The effective budget: the spec's [budget], else the method's own options (a conflict between the two
    is the core's check, made once for every method). Without any step count, ``epochs`` passes."""
    from stillroom.training import budget_value

    batch_size = budget_value(job, "batch_size", options.batch_size, 8)
    learning_rate = budget_value(job, "learning_rate", options.learning_rate, 2e-5)
    records = job.train_records()
    limit = budget_value(job, "train_examples", options.train_examples, None)
    records = records[:limit] if limit else records
    steps = budget_value(job, "steps", options.steps, None)
    if steps is None:
        steps = max(1, math.ceil(options.epochs * len(records) / batch_size))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    split = options.gradient_accumulation_steps * world
    if batch_size % split:
        raise UserError(f"batch_size {batch_size} must be a multiple of gradient_accumulation_steps x processes "
                        f"({options.gradient_accumulation_steps} x {world})", where)
    return Plan(steps, batch_size, batch_size // split, learning_rate, records)


def trainer_config(config_class, job, options, plan: Plan, output_dir, model, stage, **settings: Any):
    """``config_class`` (a TRL config) built by the engine's one policy (optimizer, schedule, precision,
    seeds, checkpoints, trackers) plus the method's own ``settings``."""
    from stillroom.training import budget_value, training_arguments

    return training_arguments(
        output_dir, config_class=config_class, steps=plan.steps, batch_size=plan.batch_size,
        learning_rate=plan.learning_rate, seed=stage.seed, model=model,
        gradient_accumulation_steps=options.gradient_accumulation_steps,
        warmup_ratio=budget_value(job, "warmup_ratio", options.warmup_ratio, 0.0),
        checkpoint_steps=stage.checkpoint_steps if stage.checkpoint_dir else None, report_to=stage.report_to,
        location=f"methods[{job.label}]", **settings)


def chat_records(records: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """(prompt, target) records as TRL's conversational ``messages`` column."""
    rows = []
    for number, record in enumerate(records, 1):
        if "prompt" not in record or "target" not in record:
            raise UserError(f"training record {record.get('id', number)!r} needs 'prompt' and 'target'", where)
        rows.append({"messages": [{"role": "user", "content": str(record["prompt"])},
                                  {"role": "assistant", "content": str(record["target"])}]})
    return rows


def encoded_chat_records(student, records: list[dict[str, Any]], max_length: int,
                         where: str) -> list[dict[str, Any]]:
    """:func:`chat_records` tokenized by the student's own ``encode_example`` (chat-templated prompt, target,
    EOS), as ``input_ids`` + ``completion_mask`` that TRL's ChatML collator takes as they are. Left to itself the
    collator templates the whole conversation, which appends the template's newline after EOS as one more target
    token; with the student's encoding gkd trains on exactly the tokens every other method (sft, logit_kd,
    joint_teaching) trains on, so they share one teacher-signal capture."""
    rows = []
    for number, (row, record) in enumerate(zip(chat_records(records, where), records), 1):
        ids, labels, _ = student.encode_example(record, max_length=max_length,
                                                location=f"{where}: record {record.get('id', number)!r}")
        rows.append({**row, "input_ids": list(ids), "completion_mask": [int(label != -100) for label in labels]})
    return rows


def prompt_records(records: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Records as a prompt-only conversational ``prompt`` column (the student completes them on-policy)."""
    rows = []
    for number, record in enumerate(records, 1):
        if "prompt" not in record:
            raise UserError(f"training record {record.get('id', number)!r} needs a 'prompt'", where)
        rows.append({"prompt": [{"role": "user", "content": str(record["prompt"])}]})
    return rows


def train(trainer, model, folder: Path, output_dir: Path, budget: Plan, name: str, *, stage, teacher_model=None,
          **fields: Any) -> dict[str, Any]:
    """Run ``trainer`` through the engine (seeds, checkpoints and resume, log_history.jsonl, consumption),
    drop its ``output_dir`` and return the stage metrics: the budget, ``name`` (the trainer), ``fields``, then
    the engine's metrics."""
    from stillroom.training import ids_digest, run_trainer

    metrics = run_trainer(trainer, folder=folder, checkpoint_dir=stage.checkpoint_dir, seed=stage.seed,
                          description=name.rsplit(".", 1)[-1], teacher_model=teacher_model)
    shutil.rmtree(output_dir, ignore_errors=True)
    model.eval()
    return {**budget.metrics(), **ids_digest(budget.records), "trainer": name, **fields, **metrics,
            "steps": metrics["optimizer_steps"], "train_seconds": metrics["wall_seconds"]}
