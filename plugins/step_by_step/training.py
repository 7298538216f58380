"""The multi-task objective of distilling step-by-step, trained through the engine (``stillroom.training``):
each step takes one batch of problems, feeds it twice (``predict: `` -> label, ``explain: `` -> rationale) and optimises ``L_label + lambda * L_rationale``
(the paper) or ``alpha * L_label + (1 - alpha) * L_rationale`` (the reference code).

Each of the two losses is the token-level mean cross-entropy over its batch's target tokens, as the
reference's ``model(**batch).loss`` is. A single mixed batch with per-record weights would average label and
rationale tokens together and so weight the tasks by their token counts; paired batches avoid that. Works for
causal and encoder-decoder models; prompts are tokenized the way the hf student tokenizes them when it
generates, so training and generation agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Weighting = Literal["paper", "convex"]
PromptFormat = Literal["raw", "chat"]


def render_input_ids(tokenizer, text: str, *, is_encoder_decoder: bool, prompt_format: PromptFormat) -> list[int]:
    """Token ids of a model input as the hf student renders it at generation: a raw prompt with the
    tokenizer's special tokens, or (``chat``, causal models with a chat template) one user message through
    the template with the generation prompt."""
    if prompt_format == "chat" and not is_encoder_decoder and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode_example(tokenizer, prompt: str, target: str, *, is_encoder_decoder: bool,
                   prompt_format: PromptFormat = "raw", max_length: int = 512) -> dict[str, list[int]]:
    """Input and label ids for one (prompt, target) pair; labels are -100 outside the target. Long
    examples lose prompt tokens from the left first, then target tokens from the right."""
    eos = tokenizer.eos_token_id
    prompt_ids = render_input_ids(tokenizer, prompt, is_encoder_decoder=is_encoder_decoder, prompt_format=prompt_format)
    target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    if eos is not None and (not target_ids or target_ids[-1] != eos):
        target_ids.append(eos)
    if is_encoder_decoder:
        return {"input_ids": prompt_ids[-max_length:], "labels": target_ids[:max_length]}
    target_ids = target_ids[: max(1, max_length - 1)]
    prompt_ids = prompt_ids[-max(1, max_length - len(target_ids)):]
    return {"input_ids": prompt_ids + target_ids, "labels": [-100] * len(prompt_ids) + target_ids}


def collate(examples: list[dict[str, list[int]]], *, pad_id: int, is_encoder_decoder: bool, device) -> dict[str, Any]:
    """Right-padded tensors: input ids, attention mask and labels (-100 on padding)."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    label_width = max(len(e["labels"]) for e in examples) if is_encoder_decoder else width
    labels = torch.full((len(examples), label_width), -100, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        ids[row, :n] = torch.tensor(example["input_ids"])
        mask[row, :n] = 1
        labels[row, : len(example["labels"])] = torch.tensor(example["labels"])
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def sequence_loss(model, batch: dict[str, Any], *, is_encoder_decoder: bool):
    """Mean cross-entropy over every target token in the batch (labels -100 are ignored)."""
    import torch.nn.functional as F

    if is_encoder_decoder:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=batch["labels"]).logits
        targets = batch["labels"]
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100)


def combine_losses(label_loss, rationale_loss, *, weighting: Weighting, rationale_weight: float, alpha: float):
    """``L_label + lambda * L_rationale`` (paper) or ``alpha * L_label + (1 - alpha) * L_rationale`` (convex)."""
    if weighting == "paper":
        return label_loss + rationale_weight * rationale_loss
    if weighting == "convex":
        return alpha * label_loss + (1.0 - alpha) * rationale_loss
    raise ValueError(f"unknown weighting {weighting!r}")


@dataclass
class TrainingSettings:
    """What the loop needs besides the model and the examples."""

    multitask: bool
    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    weighting: Weighting = "paper"
    rationale_weight: float = 1.0
    alpha: float = 0.5
    label_prefix: str = "predict: "
    rationale_prefix: str = "explain: "
    prompt_format: PromptFormat = "raw"
    max_length: int = 512
    warmup_steps: int = 0
    warmup_ratio: float | None = None  # the budget's share of warm-up steps; replaces warmup_steps when set
    max_grad_norm: float = 1.0


def encode_pairs(tokenizer, examples: list[dict[str, str]], settings: TrainingSettings, *, is_encoder_decoder: bool):
    """Label (and, multi-task, rationale) encodings for each example {input, label, rationale}."""
    encode = dict(is_encoder_decoder=is_encoder_decoder, prompt_format=settings.prompt_format,
                  max_length=settings.max_length)
    labels = [encode_example(tokenizer, settings.label_prefix + e["input"], e["label"], **encode) for e in examples]
    rationales = ([encode_example(tokenizer, settings.rationale_prefix + e["input"], e["rationale"], **encode)
                   for e in examples] if settings.multitask else None)
    return labels, rationales


def train_step_by_step(model, tokenizer, examples: list[dict[str, str]], settings: TrainingSettings, *,
                       is_encoder_decoder: bool, log=None, folder=None, checkpoint_dir=None,
                       checkpoint_steps: int | None = None, report_to="none",
                       description: str = "step_by_step train") -> dict[str, Any]:
    """Train ``model`` in place through the training engine: each step's batch of problems is fed twice
    (label and, multi-task, rationale) and the two task losses are combined. ``log(row)`` receives each logged
    row afterwards. Returns the engine's metrics plus final and mean task losses."""
    import tempfile
    from pathlib import Path

    from stillroom import training

    if not examples:
        raise ValueError("no training examples")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    labels, rationales = encode_pairs(tokenizer, examples, settings, is_encoder_decoder=is_encoder_decoder)
    collate_options = dict(pad_id=pad_id, is_encoder_decoder=is_encoder_decoder, device="cpu")

    def batch_of(indices: list[int]) -> dict[str, Any]:
        # both sequences of every problem are in the batch, so train_sequences counts two per problem
        batch = {"label": collate([labels[i] for i in indices], **collate_options)}
        if rationales is not None:
            batch["rationale"] = collate([rationales[i] for i in indices], **collate_options)
        return batch

    def loss(model, inputs, consumption):
        label_loss = sequence_loss(model, inputs["label"], is_encoder_decoder=is_encoder_decoder)
        if "rationale" not in inputs:
            return label_loss, {"label_loss": float(label_loss.detach())}
        rationale_loss = sequence_loss(model, inputs["rationale"], is_encoder_decoder=is_encoder_decoder)
        total = combine_losses(label_loss, rationale_loss, weighting=settings.weighting,
                               rationale_weight=settings.rationale_weight, alpha=settings.alpha)
        return total, {"label_loss": float(label_loss.detach()), "rationale_loss": float(rationale_loss.detach())}

    with tempfile.TemporaryDirectory(prefix="stillroom-sbs-") as scratch:
        work = Path(folder) if folder is not None else Path(scratch)
        args = training.training_arguments(
            checkpoint_dir or Path(scratch) / "trainer", steps=settings.steps, batch_size=settings.batch_size,
            learning_rate=settings.learning_rate, seed=settings.seed, model=model,
            warmup_ratio=(settings.warmup_ratio if settings.warmup_ratio is not None
                          else settings.warmup_steps / settings.steps if settings.warmup_steps else 0.0),
            max_grad_norm=settings.max_grad_norm, checkpoint_steps=checkpoint_steps if checkpoint_dir else None,
            report_to=report_to, location="step_by_step")
        trainer = training.build_trainer(model, args=args, train_dataset=list(range(len(examples))),
                                         collate=batch_of, loss=loss)
        metrics = training.run_trainer(trainer, folder=work, checkpoint_dir=checkpoint_dir, seed=settings.seed,
                                       description=description)
        rows = training.read_log_history(work)
    if log is not None:
        for row in rows:
            log(row)
    result = {**metrics, "steps": metrics["optimizer_steps"], "examples": len(examples)}
    for name in ("loss", "label_loss", "rationale_loss"):
        values = [float(row[name]) for row in rows if name in row]
        if values:
            result[f"final_{name}"] = values[-1]
            result[f"mean_{name}"] = sum(values) / len(values)
    return result
