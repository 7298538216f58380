"""Training under the budget: the job a method runs in, and the one engine every student trains through.

``MethodJob`` is the core's implementation of ``stillroom.Job``: the method's roles, data and budget, its stages
under one prefix (``entry_stage_prefix``) and what it consumed. Every stage reseeds Python, NumPy and torch from
``derive_seed(entry seed, stage name)`` before it starts, so a stage's result depends only on its method,
options, seed and data, never on which stages ran before it in the process, on ``--resume`` or on ``--jobs``.
Each stage records the API calls, tokens, cost and wall time it used (``endpoint_usage``), and
``MethodJob.summary`` sums them over the entry: the one budget summary the leaderboard shows.

The engine is a ``transformers.Trainer`` built here. A method contributes a loss, a data policy and its stages;
it never owns an optimizer loop. The engine owns what must be the same for every method so a comparison is
fair: the optimizer (AdamW), the schedule (linear warm-up, linear decay), clipping, precision (bf16 only on a
CUDA GPU that supports it), gradient accumulation, seeds, distribution (the Trainer splits each batch over
``accelerate launch`` processes), trackers (``report_to``), mid-stage checkpoints and resume, training
progress, and the measured consumption every training stage reports (``optimizer_steps``,
``train_sequences``, ``train_tokens``, ``teacher_forward_tokens``, ``student_generated_tokens``,
``flops_estimate``, ``wall_seconds``), which the job sums with the stage's API usage.

It must not know any method: methods hand it a dataset, a collate function and, when they need one, a loss.
It neither schedules entries nor evaluates them (``core/runs.py`` does); it writes only through the run folder
(``core/rundir.py``). torch and transformers are imported inside the functions that use them, so importing
stillroom stays fast.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from stillroom.results import BUDGET_COLUMNS, evaluate_subject
from stillroom.roles import Component, Context, Evaluator, Job, MetricValue, Student, UserError
from stillroom.rundir import RunDirectory, naming, process_rank, read_jsonl, records_stage
from stillroom.specs import Budget

MARKER = "stillroom_consumption.json"
"""Written into a checkpoint-N folder after the Trainer has finished writing it: only folders holding it are
resumed from (the Trainer writes a checkpoint file by file, so a kill can leave a partial one)."""

LOG_FILE = "log_history.jsonl"
MAX_LOG_LINES = 500
SMALL_MODEL_PARAMETERS = 5_000_000


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


# ---------------------------------------------------------------------------------------------------------
# The engine's policy


def world_size() -> int:
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def model_device(model) -> str:
    try:
        return next(model.parameters()).device.type
    except (StopIteration, AttributeError):
        return "cpu"


def parameter_count(model) -> int:
    return 0 if model is None else sum(p.numel() for p in model.parameters())


def training_arguments(output_dir, *, steps: int, batch_size: int, learning_rate: float, seed: int, model=None,
                       config_class=None, gradient_accumulation_steps: int = 1, warmup_ratio: float = 0.0,
                       weight_decay: float = 0.0, max_grad_norm: float = 1.0, checkpoint_steps: int | None = None,
                       report_to: str | list[str] = "none", location: str = "training", **extra: Any):
    """The TrainingArguments (or ``config_class``, e.g. TRL's ``GKDConfig``) every method trains with.

    ``batch_size`` is the global batch of one optimizer step: it is split over gradient accumulation and the
    processes of an ``accelerate launch``, so every rank sees its share of each batch. ``extra`` holds a
    config class's own fields (GKD's ``lmbda``...) and may not override the policy's."""
    import torch
    from transformers import TrainingArguments

    if steps < 1 or batch_size < 1 or learning_rate <= 0:
        raise UserError(f"training needs steps >= 1, batch_size >= 1 and learning_rate > 0 (got {steps}, "
                        f"{batch_size}, {learning_rate})", location)
    split = gradient_accumulation_steps * world_size()
    if batch_size % split:
        raise UserError(f"batch_size {batch_size} must be a multiple of gradient_accumulation_steps x processes "
                        f"({gradient_accumulation_steps} x {world_size()})", location)
    device = model_device(model) if model is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    on_cuda = device == "cuda" and torch.cuda.is_available()
    policy = dict(
        output_dir=str(output_dir),
        max_steps=int(steps),
        per_device_train_batch_size=batch_size // split,
        gradient_accumulation_steps=gradient_accumulation_steps,
        learning_rate=float(learning_rate),
        optim="adamw_torch",
        lr_scheduler_type="linear",
        # transformers 5: a float below 1 is a share of the steps (rounded up)
        warmup_steps=float(warmup_ratio),
        weight_decay=float(weight_decay),
        max_grad_norm=float(max_grad_norm),
        bf16=bool(on_cuda and torch.cuda.is_bf16_supported()),
        fp16=False,
        use_cpu=device == "cpu",
        activation_checkpointing=False,  # TRL configs default to it: on CPU it crawls
        seed=int(seed),
        data_seed=int(seed),
        report_to=report_to,
        logging_strategy="steps",
        logging_steps=max(1, math.ceil(steps / MAX_LOG_LINES)),
        save_strategy="steps" if checkpoint_steps else "no",
        save_steps=int(checkpoint_steps or steps),
        save_total_limit=2,  # the newest complete checkpoint survives a kill while the next one is written
        eval_strategy="no",
        disable_tqdm=True,  # the engine draws its own progress (a bar on a terminal, lines otherwise)
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    clash = sorted(set(extra) & set(policy))
    if clash:
        raise ValueError(f"training_arguments: {clash} are set by the engine's policy")
    return (config_class or TrainingArguments)(**policy, **extra)


# ---------------------------------------------------------------------------------------------------------
# Consumption


@dataclass
class Consumption:
    """What a training stage consumed; losses and trainers add to it as they go."""

    train_sequences: int = 0
    train_tokens: int = 0
    teacher_forward_tokens: int = 0
    student_generated_tokens: int = 0

    def add(self, other: dict[str, Any]) -> None:
        for name in asdict(self):
            setattr(self, name, getattr(self, name) + int(other.get(name, 0) or 0))


def count_inputs(inputs) -> tuple[int, int]:
    """(sequences, non-pad tokens) of a batch: every dict holding ``input_ids`` counts, nested ones too (a
    batch may carry several sub-batches, e.g. step_by_step's label and rationale sequences)."""
    rows = tokens = 0
    if isinstance(inputs, dict):
        ids = inputs.get("input_ids")
        if ids is not None and hasattr(ids, "shape"):
            mask = inputs.get("attention_mask")
            rows += int(ids.shape[0])
            tokens += int(mask.sum()) if mask is not None else int(ids.numel())
        elif hasattr(inputs.get("prompt_ids"), "shape") and hasattr(inputs.get("completion_mask"), "sum"):
            # TRL's on-policy trainers keep prompts and sampled completions apart
            rows += int(inputs["prompt_ids"].shape[0])
            tokens += int(inputs["prompt_mask"].sum()) + int(inputs["completion_mask"].sum())
        for value in inputs.values():
            if isinstance(value, dict):
                more = count_inputs(value)
                rows, tokens = rows + more[0], tokens + more[1]
    return rows, tokens


def summed_over_ranks(values: list[int], device=None) -> list[int]:
    """``values`` summed over the processes of a distributed run (as they are otherwise)."""
    import torch

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device or "cpu")
    torch.distributed.all_reduce(tensor)
    return [int(v) for v in tensor.tolist()]


def flops_estimate(*, student_parameters: int, teacher_parameters: int, consumption: Consumption) -> int:
    """6·N_student per trained token (forward + backward) + 2·N per token of every forward-only pass."""
    return int(6 * student_parameters * consumption.train_tokens
               + 2 * teacher_parameters * consumption.teacher_forward_tokens
               + 2 * student_parameters * consumption.student_generated_tokens)


class ConsumptionMixin:
    """Mixed in before a Trainer class (``class T(ConsumptionMixin, GKDTrainer)``): counts the sequences and
    tokens every training batch feeds the student. Losses and trainers add teacher and generated tokens to
    ``self.consumption`` themselves; extras a loss reports are averaged into the logged rows."""

    def __init__(self, *args, **kwargs):
        self.consumption = Consumption()
        self._log_extras: dict[str, list[float]] = {}
        super().__init__(*args, **kwargs)

    def count_batch(self, inputs) -> None:
        if self.model.training:
            rows, tokens = count_inputs(inputs)
            self.consumption.train_sequences += rows
            self.consumption.train_tokens += tokens

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.count_batch(inputs)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def _issue_warnings_after_load(self, load_result) -> None:
        # a checkpoint of a model with tied input/output embeddings stores the shared matrix once: the output
        # side is "missing" by design, not a fault worth a warning on every resume
        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        config = getattr(model, "config", None)
        tied = getattr(config, "tie_word_embeddings", False)
        if tied and load_result.missing_keys and all(k.endswith("lm_head.weight") for k in load_result.missing_keys) \
                and not load_result.unexpected_keys:
            model.tie_weights()
            return
        super()._issue_warnings_after_load(load_result)

    def note(self, **values: float) -> None:
        """Values to average into the next logged row (e.g. the two task losses of step_by_step)."""
        for name, value in values.items():
            self._log_extras.setdefault(name, []).append(float(value))

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            for name, values in self._log_extras.items():
                if values:
                    logs[name] = sum(values) / len(values)
            self._log_extras = {}
        super().log(logs, *args, **kwargs)


LossFunction = Callable[[Any, dict, Consumption], Any]
"""``loss(model, inputs, consumption)``: a scalar tensor, or ``(tensor, {name: float})`` whose values are
averaged into the logged rows. It adds teacher forward tokens and generated tokens to ``consumption``."""


def target_cross_entropy(model, inputs: dict, consumption: Consumption | None = None):
    """Mean cross-entropy per target token (labels -100 ignored). An optional per-row ``weights`` tensor
    weighs each row's tokens: sum_i w_i sum_t ce_it / sum_i n_i, the plain token mean when every weight is 1.
    Causal models predict token t+1 from position t; encoder-decoder models get ``decoder_input_ids``."""
    import torch.nn.functional as F

    labels = inputs["labels"]
    weights = inputs.get("weights")
    forward = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "decoder_input_ids")}
    logits = model(**forward).logits
    if "decoder_input_ids" not in inputs:
        logits, labels = logits[:, :-1], labels[:, 1:]
    per_token = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                ignore_index=-100, reduction="none").view(labels.shape)
    mask = labels != -100
    if weights is not None:
        per_token = per_token * weights[:, None]
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


@functools.lru_cache(maxsize=None)
def _engine_trainer_class():
    import torch
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class EngineTrainer(ConsumptionMixin, Trainer):
        """The Trainer of methods that bring their own loss or batch policy (and of plain SFT).

        Plain SFT uses this class with ``target_cross_entropy`` rather than TRL's SFTTrainer: the hf student
        trains on pre-tokenized records with prompt masking and optional per-record weights, which SFTTrainer
        has no column for, and SFTTrainer's dataset preparation (a datasets.map per stage) costs more than a
        whole training stage of the tiny quickstart models. The loop itself is the same Trainer either way."""

        def __init__(self, *args, loss: LossFunction | None = None, ordered: bool = False, **kwargs):
            self.method_loss = loss or target_cross_entropy
            self.ordered = ordered
            super().__init__(*args, **kwargs)
            # the method's losses are means per micro-batch: gradient accumulation divides them
            self.loss_is_scaled_for_ga = False

        def _get_train_sampler(self, train_dataset=None):
            if self.ordered:
                return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)
            return super()._get_train_sampler(train_dataset)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self.count_batch(inputs)
            value = self.method_loss(model, inputs, self.consumption)
            if isinstance(value, tuple):
                value, extras = value
                self.note(**extras)
            if not bool(torch.isfinite(value.detach())):
                kind = "NaN" if bool(torch.isnan(value.detach())) else "infinite"
                raise UserError(f"the training loss became {kind} at step {self.state.global_step + 1} "
                                f"(learning_rate={self.args.learning_rate:g}); lower the learning rate", "training")
            return (value, None) if return_outputs else value

    return EngineTrainer


def build_trainer(model, *, args, train_dataset, collate: Callable[[list], dict], loss: LossFunction | None = None,
                  ordered: bool = False, processing_class=None, callbacks=None):
    """An engine Trainer over ``train_dataset`` (any sized sequence; ``collate`` turns a list of its items into
    a batch). ``ordered``: the items are consumed in dataset order (a method that lays out its own batches,
    step after step); otherwise in the Trainer's seeded random order (``data_seed``)."""
    return _engine_trainer_class()(model=model, args=args, train_dataset=train_dataset, data_collator=collate,
                                   loss=loss, ordered=ordered, processing_class=processing_class,
                                   callbacks=callbacks)


# ---------------------------------------------------------------------------------------------------------
# Checkpoints, progress and the run


def complete_checkpoints(checkpoint_dir: Path | None) -> list[tuple[int, Path]]:
    """(step, folder) of every checkpoint the engine finished writing, oldest first."""
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return []
    found = []
    for folder in Path(checkpoint_dir).glob("checkpoint-*"):
        step = folder.name.rsplit("-", 1)[-1]
        if step.isdigit() and (folder / MARKER).is_file():
            found.append((int(step), folder))
    return sorted(found)


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0 or world_size() == 1


def _callbacks_class():
    from transformers import TrainerCallback

    class EngineCallback(TrainerCallback):
        """Marks finished checkpoints (with the consumption so far) and shows training progress."""

        def __init__(self, trainer, description: str, previous_seconds: float):
            self.trainer = trainer
            self.description = description
            self.previous_seconds = previous_seconds
            self.started = time.perf_counter()
            self.progress = None

        def seconds(self) -> float:
            return self.previous_seconds + time.perf_counter() - self.started

        def on_train_begin(self, args, state, control, **kwargs):
            if _is_rank_zero():
                from stillroom.progress import TrainingProgress

                self.progress = TrainingProgress(self.description, state.max_steps, start=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.progress is not None and logs and "loss" in logs:
                self.progress.update(state.global_step, loss=logs["loss"])

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(state.global_step)

        def on_save(self, args, state, control, **kwargs):
            counts = asdict(self.trainer.consumption)
            totals = dict(zip(counts, summed_over_ranks(list(counts.values()), self.trainer.args.device)))
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if _is_rank_zero() and folder.is_dir():
                tmp = folder / (MARKER + ".tmp")
                tmp.write_text(json.dumps({"consumption": totals, "local": counts, "wall_seconds": self.seconds(),
                                           "step": state.global_step}))
                os.replace(tmp, folder / MARKER)

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.close()
                self.progress = None

    return EngineCallback


def quiet(trainer) -> None:
    """No transformers/TRL progress bar and no printed log dicts: the engine's callback shows progress."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def write_log_history(trainer, folder: Path, after: int = 0) -> list[dict[str, Any]]:
    """The logged training rows as ``folder/log_history.jsonl``: {"step", "loss", ...} per logged step (those
    after step ``after``: a run continued from an earlier one's state inherits its history)."""
    rows = [{"step": int(entry.get("step", 0)), **{k: v for k, v in entry.items() if k != "step"}}
            for entry in trainer.state.log_history if "loss" in entry and int(entry.get("step", 0)) > after]
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOG_FILE).open("w") as out:
        for row in rows[-MAX_LOG_LINES:]:
            out.write(json.dumps(row, default=float) + "\n")
    return rows


class small_model_threads:
    """Train or run a small model on CPU with one intra-op thread, then restore the thread count.

    Matrices of a few-million-parameter model are too small for intra-op parallelism to pay; on a busy
    2-core machine two OpenMP threads made a 60k-parameter Llama 20-60x slower (spin-waiting on a core
    another process holds), one thread never did. Larger models and GPUs are left alone."""

    def __init__(self, *models):
        self.models = [m for m in models if m is not None]
        self.previous: int | None = None

    def __enter__(self):
        import torch

        if not self.models or torch.get_num_threads() <= 1:
            return self
        if any(model_device(m) != "cpu" for m in self.models):
            return self
        if max(parameter_count(m) for m in self.models) < SMALL_MODEL_PARAMETERS:
            self.previous = torch.get_num_threads()
            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        import torch

        if self.previous is not None:
            torch.set_num_threads(self.previous)
        return False


def read_log_history(folder) -> list[dict[str, Any]]:
    path = Path(folder) / LOG_FILE
    return read_jsonl(path) if path.exists() else []


def save_state(trainer, folder: Path) -> None:
    """The trainer's full state (weights, optimizer, schedule, RNG, step) as a checkpoint folder that a later
    ``run_trainer(continue_from=folder)`` carries on from (lion's iterations share one optimizer this way)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    output_dir = trainer.args.output_dir
    trainer.args.output_dir = str(tmp)
    try:
        trainer._save_checkpoint(trainer.model, trial=None)
    finally:
        trainer.args.output_dir = output_dir
    if _is_rank_zero():
        saved = tmp / f"checkpoint-{trainer.state.global_step}"
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(saved, folder)
        shutil.rmtree(tmp, ignore_errors=True)


def _release_references(accelerator, *objects):
    """What ``Accelerator.free_memory`` does besides garbage collection: forget the prepared objects."""
    accelerator._schedulers, accelerator._optimizers, accelerator._models, accelerator._dataloaders = [], [], [], []
    accelerator.step = 0
    return objects


def run_trainer(trainer, *, folder, checkpoint_dir=None, seed: int, description: str = "training",
                teacher_model=None, continue_from=None, stop_after: int | None = None,
                keep_state=None) -> dict[str, Any]:
    """Train ``trainer`` (any Trainer whose class mixes in ``ConsumptionMixin``) and return the stage metrics.

    Seeds every generator with ``seed`` first (the Trainer reseeds with ``args.seed``, the same number), so a
    stage's result never depends on what ran before it in the process. With ``checkpoint_dir`` it saves there
    every ``args.save_steps`` and, when a complete checkpoint is already there (a killed stage), continues from
    the newest one; the folder is removed when training finishes.

    ``continue_from``: a folder ``keep_state`` wrote at the end of an earlier run: its optimizer state, schedule
    and step carry on (over new data) for ``stop_after`` more steps of the schedule ``args.max_steps`` spans."""
    import warnings

    from transformers import TrainerCallback

    folder = Path(folder)
    seed_everything(seed)
    model = trainer.model
    quiet(trainer)
    previous: dict[str, Any] = {}
    resume = None
    start_step = 0
    if continue_from is not None:
        continue_from = Path(continue_from)
        start_step = int(json.loads((continue_from / "trainer_state.json").read_text())["global_step"])
        resume = continue_from
        trainer.args.ignore_data_skip = True  # new data: start at its beginning, not where the old run stopped
    if checkpoint_dir is not None:
        trainer.args.output_dir = str(checkpoint_dir)
        found = complete_checkpoints(checkpoint_dir)
        if found:
            resume = found[-1][1]
            previous = json.loads((resume / MARKER).read_text())
            trainer.consumption.add(previous.get("local") or {})
            trainer.args.ignore_data_skip = False if continue_from is None else True
    callback = _callbacks_class()(trainer, description, float(previous.get("wall_seconds", 0.0)))
    trainer.add_callback(callback)
    if model_device(model) == "cpu" and getattr(trainer, "accelerator", None) is not None:
        # accelerate's free_memory (called as training starts) runs gc.collect: 0.3-1 s in a process holding
        # many objects, a large share of a tiny model's stage, and on CPU there is no device cache to free
        trainer.accelerator.free_memory = functools.partial(_release_references, trainer.accelerator)
    if stop_after is not None:
        stop_at = start_step + stop_after

        class StopAt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step >= stop_at:
                    control.should_training_stop = True

        trainer.add_callback(StopAt())
    with small_model_threads(model, teacher_model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # TRL calls deprecated transformers names
        try:
            result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
        finally:
            if callback.progress is not None:
                callback.progress.close()
    wall = callback.seconds()
    if keep_state is not None:
        save_state(trainer, Path(keep_state))
    rows = write_log_history(trainer, folder, after=start_step) if _is_rank_zero() else []
    counts = asdict(trainer.consumption)
    consumption = Consumption(**dict(zip(counts, summed_over_ranks(list(counts.values()), trainer.args.device))))
    unwrapped = trainer.accelerator.unwrap_model(model) if hasattr(trainer, "accelerator") else model
    student_parameters = parameter_count(unwrapped)
    teacher_parameters = parameter_count(teacher_model)
    if checkpoint_dir is not None and _is_rank_zero():
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    model.eval()
    losses = [float(row["loss"]) for row in rows]
    return {
        "optimizer_steps": int(trainer.state.global_step) - start_step,
        **asdict(consumption),
        "flops_estimate": flops_estimate(student_parameters=student_parameters,
                                         teacher_parameters=teacher_parameters, consumption=consumption),
        "student_parameters": student_parameters,
        "teacher_parameters": teacher_parameters,
        "wall_seconds": round(wall, 3),
        "resumed_from_step": int(previous.get("step", 0)),
        **({"continued_from_step": start_step} if continue_from is not None else {}),
        "train_loss": sum(losses) / len(losses) if losses else float(result.training_loss),
        "final_loss": losses[-1] if losses else None,
        "first_loss": losses[0] if losses else None,
        "world_size": world_size(),
        "per_device_batch_size": int(trainer.args.per_device_train_batch_size),
        "rank0_sequences": counts["train_sequences"],
        "seed": int(seed),
    }


# ---------------------------------------------------------------------------------------------------------
# What a method's stage hands the engine


@dataclass
class StageSettings:
    """Seed, checkpoint folder and cadence, and trackers of one training stage of a method entry."""

    seed: int
    checkpoint_dir: Path | None
    checkpoint_steps: int | None
    report_to: str | list[str] = "none"
    extra: dict[str, Any] = field(default_factory=dict)


def stage_settings(job: Job, stage_name: str) -> StageSettings:
    """The settings of ``job``'s training stage ``stage_name`` (e.g. ``train`` or ``iter2/train``)."""
    every = job.budget.checkpoint_steps
    return StageSettings(seed=job.stage_seed(stage_name),
                         checkpoint_dir=Path(job.checkpoint_dir(stage_name)) if every else None,
                         checkpoint_steps=every, report_to=os.environ.get("STILLROOM_REPORT_TO") or "none")


def budget_value(job, name: str, own, default):
    """A training setting: the spec's ``[budget]`` value, else the method's own option, else ``default``
    (conflicts between the two are the core's check, made once for every method)."""
    shared = getattr(job.budget, name, None)
    return shared if shared is not None else own if own is not None else default


def ids_digest(records: list[dict[str, Any]]) -> dict[str, Any]:
    """How many training problems a stage used and a digest of their ids in order, so two entries' stage
    metrics show at a glance whether they trained on the same problems."""
    import hashlib

    ids = [str(r.get("id", index)) for index, r in enumerate(records)]
    return {"train_examples": len(ids), "train_ids_sha256": hashlib.sha256("\x1f".join(ids).encode()).hexdigest()[:16]}


@functools.lru_cache(maxsize=None)
def counting(trainer_class, teacher_sees_inputs: bool = False):
    """``trainer_class`` (a transformers or TRL Trainer) with the engine's consumption counting mixed in, for
    trainers run as they are (TRL's DistillationTrainer, GOLD). ``teacher_sees_inputs``: the trainer runs its
    teacher forward over every sequence it trains on (distillation trainers), so those tokens are teacher
    forward tokens too; completions a batch carries (``completion_mask``, on-policy trainers) are counted as
    student-generated tokens each time a batch is trained on."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and isinstance(inputs, dict):
            _, tokens = count_inputs(inputs)
            if teacher_sees_inputs:
                self.consumption.teacher_forward_tokens += tokens
            completion = inputs.get("completion_mask")
            if completion is not None and hasattr(completion, "sum"):
                self.consumption.student_generated_tokens += int(completion.sum())
        return super(counted, self).compute_loss(model, inputs, return_outputs=return_outputs,
                                                 num_items_in_batch=num_items_in_batch)

    counted = type(f"Counting{trainer_class.__name__}", (ConsumptionMixin, trainer_class),
                   {"compute_loss": compute_loss})
    return counted


# ---------------------------------------------------------------------------------------------------------
# What a trainer may be given: the checks of white-box distillation (the teacher's full next-token
# distribution on the student's own token sequences), shared by every method that trains on teacher logits


def white_box_teacher(job, where: str, *, otherwise: str):
    """The job's teacher, which must expose its transformers model (full logits); a UserError otherwise that
    suggests an hf teacher or ``otherwise`` (what the method can do without one)."""
    teacher = job.teacher
    if teacher is None:
        raise UserError(f"needs a teacher; add a [teacher] table: an hf teacher, or {otherwise}", where)
    if teacher.model is None:
        raise UserError(f"needs a white-box teacher (full logits): teacher kind {teacher.name!r} exposes no model. "
                        f"Use an hf teacher, or {otherwise}", where)
    return teacher


def is_encoder_decoder(model) -> bool:
    return bool(getattr(model.config, "is_encoder_decoder", False))


def causal_models(job, where: str, *, otherwise: str, encoder_decoder_error: str):
    """``(teacher, student)``: the white-box teacher (see ``white_box_teacher``) and the student, both causal
    language models (a UserError ``encoder_decoder_error`` otherwise: TRL's on-policy trainers sample and score
    one token sequence with both models)."""
    teacher = white_box_teacher(job, where, otherwise=otherwise)
    student = job.student
    if is_encoder_decoder(student.model) or is_encoder_decoder(teacher.model):
        raise UserError(encoder_decoder_error, where)
    return teacher, student


def vocab_size(model) -> int:
    config = model.config
    return int(config.get_text_config().vocab_size if hasattr(config, "get_text_config") else config.vocab_size)


def same_vocabulary(student, teacher, *, padded_rows: bool = False) -> tuple[bool, str]:
    """Whether the student and the teacher share one vocabulary (sizes and token ids), and why not: only then
    can one distribution be compared with the other token by token.

    ``padded_rows``: a caller that compares logits up to the narrower width accepts embedding matrices that
    differ only by padding rows (Qwen2.5-7B has 152,064 rows, Qwen2.5-0.5B 151,936, one tokenizer): then the
    sizes may differ when both tokenizers are present and map every token to the same id. TRL's trainers
    compare full logits, so gkd and gkd_rl keep the strict default."""
    student_size, teacher_size = vocab_size(student.model), vocab_size(teacher.model)
    both_tokenizers = teacher.tokenizer is not None and student.tokenizer is not None
    if student_size != teacher_size and not (padded_rows and both_tokenizers):
        return False, f"vocab_size {student_size} (student) != {teacher_size} (teacher)"
    if both_tokenizers and student.tokenizer.get_vocab() != teacher.tokenizer.get_vocab():
        return False, "the tokenizers map tokens to different ids"
    return True, ""


def require_chat_tokenizer(tokenizer, who: str, where: str) -> None:
    """A UserError unless ``tokenizer`` has a chat template (TRL's trainers render prompts and targets as chat
    messages); gives it the EOS token as padding when it has none, as TRL's collators need one."""
    if tokenizer is None:
        raise UserError(f"the {who} has no tokenizer", where)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"the {who}'s tokenizer has no chat template; TRL renders the training prompts as chat "
                        "messages", where)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def import_trl_experimental(module: str):
    """``module`` (a ``trl.experimental`` module) imported without TRL's notice that its API is unstable.

    The notice is printed once per process, on the first import, unless TRL_EXPERIMENTAL_SILENCE is set; the
    methods that use these trainers pin TRL's version and name the trainer in their metrics, so the notice
    would only clutter every run's output. Only this import is silenced: the user's environment and warning
    filters are left as they were."""
    import importlib
    import warnings

    from trl.import_utils import TRLExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TRLExperimentalWarning)
        return importlib.import_module(module)
