"""Options of the gkd and on_policy methods; field descriptions give TRL's meaning of each option."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from stillroom import ComponentRef, MethodConfig


class TrainingOptions(MethodConfig):
    """Optimisation options both methods share; a spec's [budget] overrides steps, batch size, learning rate
    and the number of training examples so every method gets the same budget."""

    learning_rate: float = Field(2e-5, gt=0, description="peak AdamW learning rate (linear decay); "
                                                         "budget.learning_rate overrides it")
    steps: int | None = Field(None, ge=1, description="optimizer steps (TRL max_steps); None trains for `epochs` "
                                                      "epochs; budget.steps overrides it")
    batch_size: int = Field(8, ge=1, description="examples per optimizer step, split over gradient accumulation "
                                                 "and processes; budget.batch_size overrides it")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step; batch_size "
                                                                  "must be a multiple of it")
    epochs: float = Field(1.0, gt=0, description="passes over the training data when steps is not set")
    train_examples: int | None = Field(None, ge=1, description="use only the first N training records; "
                                                               "budget.train_examples overrides it")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of the steps spent warming the learning "
                                                             "rate up linearly")


class GKDOptions(TrainingOptions):
    """Options of the gkd method (TRL's experimental GKDTrainer)."""

    lmbda: float = Field(0.5, ge=0.0, le=1.0, description="student-data fraction: per batch, when a uniform random "
                                                          "draw is <= lmbda, the student generates the completions "
                                                          "it is trained on (on-policy); otherwise the gold targets "
                                                          "(or teacher samples with seq_kd) are used. 1 = always "
                                                          "on-policy, 0 = never")
    beta: float = Field(0.5, ge=0.0, le=1.0, description="generalized-JSD interpolation: the mixture is "
                                                         "beta*teacher + (1-beta)*student; exactly 0 = forward "
                                                         "KL(teacher||student), exactly 1 = reverse "
                                                         "KL(student||teacher); ignored when `loss` is set")
    temperature: float = Field(0.9, gt=0, description="sampling temperature of on-policy (and seq_kd) "
                                                      "generations only; TRL computes the loss at temperature 1")
    max_new_tokens: int = Field(128, ge=1, description="most tokens generated per on-policy completion")
    seq_kd: bool = Field(False, description="on batches that are not on-policy, train on teacher-sampled "
                                            "completions instead of the gold targets (sequence-level KD)")
    max_length: int = Field(1024, ge=8, description="most tokens per training sequence (prompt + target), "
                                                    "truncated as the student's own encoding does: the prompt "
                                                    "keeps its end, the target at least half the window")
    loss: ComponentRef("loss") | None = Field(  # type: ignore[valid-type]
        None, description="replace TRL's generalized-JSD loss by a registered loss, e.g. \"tvd\" or "
                          "{kind = \"topk_forward_kl\", k = 20}; None keeps TRL's own loss with `beta`")


class OnPolicyOptions(TrainingOptions):
    """Options of the on_policy method (TRL's DistillationTrainer, or GOLD across tokenizers)."""

    cross_tokenizer: bool = Field(False, description="teacher and student use different tokenizers: train with "
                                                     "TRL's experimental GOLD trainer and its ULD loss (aligns the "
                                                     "two tokenizations by text) instead of DistillationTrainer")
    beta: float = Field(1.0, ge=0.0, le=1.0, description="generalized-JSD interpolation as in gkd: 0 = forward KL, "
                                                         "1 = reverse KL (DistillationTrainer's default); GOLD uses "
                                                         "it for its same-vocabulary part")
    temperature: float = Field(1.0, gt=0, description="temperature of the student's on-policy sampling; "
                                                      "DistillationTrainer also applies it to the loss")
    max_completion_length: int = Field(128, ge=1, description="most tokens generated per on-policy completion")
    lmbda: float = Field(1.0, ge=0.0, le=1.0, description="cross_tokenizer (GOLD) only: student-data fraction "
                                                          "as in gkd; DistillationTrainer is always on-policy")
    seq_kd: bool = Field(False, description="cross_tokenizer (GOLD) only: off-policy batches use teacher samples "
                                            "instead of gold targets")
    max_length: int = Field(1024, ge=16, description="cross_tokenizer (GOLD) only: most tokens per training "
                                                     "sequence; must exceed max_completion_length")
    uld_options: dict[str, Any] = Field(default_factory=dict, description="cross_tokenizer (GOLD) only: extra "
                                                                          "GOLDConfig uld_* options, e.g. "
                                                                          "{uld_use_hybrid_loss = true}")

    @field_validator("uld_options")
    @classmethod
    def _only_uld_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        other = sorted(k for k in value if not (k.startswith("uld_") or k == "use_extended_uld"))
        if other:
            raise ValueError(f"uld_options takes GOLDConfig uld_* options only; move {other} to the method's "
                             "own options")
        return value
