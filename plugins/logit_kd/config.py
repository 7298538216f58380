"""Options of the logit_kd method."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from stillroom import ComponentRef, MethodConfig


class LogitKDOptions(MethodConfig):
    """Budget fields are used only where the spec's [budget] is silent (steps 200, batch 16, lr 1e-4)."""

    train_examples: int | None = Field(None, ge=1, description="training records to use; default: the budget's, "
                                                               "else all")
    steps: int | None = Field(None, ge=1, description="optimizer steps; default: the budget's, else 200")
    batch_size: int | None = Field(None, ge=1, description="records per step; default: the budget's, else 16")
    learning_rate: float | None = Field(None, gt=0, description="peak learning rate (linear decay); default: the "
                                                                "budget's, else 1e-4")
    max_length: int = Field(512, ge=8, description="longest training sequence in tokens (prompt + target)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of steps with linear learning-rate warm-up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    top_k: int = Field(20, ge=1, le=1000, description="teacher alternatives stored per target token (the "
                                                      "capture's k; an API teacher must allow that many "
                                                      "prompt log-probs, e.g. vLLM --max-logprobs)")
    loss: ComponentRef("loss") | None = Field(  # type: ignore[valid-type]
        None, description="a registered top-k loss over the stored signal, e.g. {kind = \"topk_reverse_kl\"} or "
                          "{kind = \"topk_gjsd\", beta = 0.5}; default topk_forward_kl (word-level KD)")
    targets: Literal["gold", "teacher"] = Field(
        "gold", description="which sequences the teacher scores and the student trains on: the gold targets, or "
                            "the teacher's own greedy answers to the training prompts")
    max_new_tokens: int = Field(256, ge=1, description="longest teacher answer (targets = 'teacher')")
    ce_weight: float = Field(0.0, ge=0.0, le=1.0, description="mix in cross-entropy on the targets: loss = "
                                                              "(1 - ce_weight) * KD + ce_weight * CE")

    @field_validator("loss")
    @classmethod
    def _top_k_loss(cls, value):
        kind = None if value is None else dict(value).get("kind")
        if kind is not None and not str(kind).startswith("topk_"):
            raise ValueError(f"logit_kd trains on stored top-k signals: use a topk_* loss, not {kind!r}")
        return value
