"""Options of the joint_teaching method. The defaults are the paper's recommended recipe (KD4Gen, Calderon
et al. 2023): word-level KD on several sampled teacher pseudo-targets, jointly with pseudo-targets the
student writes itself every second step. Other settings give the rungs of its ablation ladder; see the
method's docstring."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from stillroom import ComponentRef, MethodConfig


class JointTeachingConfig(MethodConfig):
    """Options of the joint_teaching method."""

    # -- training budget (the spec's [budget] wins) --------------------------------------------------
    train_examples: int | None = Field(None, ge=1, description="training records to use (the first N of the train "
                                                               "split); default: the budget's, else all")
    steps: int | None = Field(None, ge=1, description="optimizer steps; default: the budget's, else 200")
    batch_size: int | None = Field(None, ge=1, description="examples per optimizer step; default: the budget's, "
                                                           "else 16")
    learning_rate: float | None = Field(None, gt=0, description="peak AdamW learning rate (linear decay); default: "
                                                                "the budget's, else 1e-4")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of steps with linear learning-rate warm-up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm; 0 turns clipping off")
    max_length: int = Field(512, ge=8, description="most tokens of prompt plus target per training sequence; the "
                                                   "prompt loses its oldest tokens first")

    # -- the objective ----------------------------------------------------------------------------------
    loss: ComponentRef("loss") = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"kind": "forward_kl"},
        description="word-level loss from the losses plugin, a kind or a table: 'forward_kl' (KD4Gen's "
                    "KL(teacher||student) per target token), 'reverse_kl', 'gjsd', 'tvd', a topk_* kind, or 'ce' "
                    "(plain fine-tuning on the targets: with pseudo-targets that is sequence-level KD). Its "
                    "temperature option is the distillation temperature")
    sparse_loss: ComponentRef("loss") | None = Field(  # type: ignore[valid-type]
        None, description="loss for sparse teacher targets (API teachers' top-k log-probs, or a teacher with "
                          "another tokenizer); default: forward_kl, tvd and ce are applied to the mapped "
                          "distribution as is (zero probability outside it), reverse_kl and gjsd become "
                          "topk_reverse_kl / topk_gjsd with the same options")
    temperature_squared: bool = Field(True, description="multiply the loss by temperature^2 (Hinton et al.; "
                                                        "KD4Gen does), so gradients keep their scale when the "
                                                        "loss's temperature changes")

    # -- teacher pseudo-targets ---------------------------------------------------------------------------
    pseudo_targets: int = Field(4, ge=0, le=64, description="K: teacher pseudo-targets per training input, "
                                                            "generated once; epoch e trains on the (e mod K)-th. 0 "
                                                            "= none (train on the gold targets)")
    decoding: Literal["sample", "beam", "greedy"] = Field(
        "sample", description="how teacher pseudo-targets are generated: 'sample' (K samples at "
                              "sampling_temperature), 'beam' (the K best beams of a beam search of width "
                              "max(num_beams, K); needs a white-box teacher) or 'greedy' (K must be 1)")
    num_beams: int = Field(4, ge=1, le=64, description="beam width for decoding='beam' (at least K is used)")
    sampling_temperature: float = Field(1.0, gt=0, le=5, description="temperature of sampled teacher "
                                                                     "pseudo-targets; above 1 is KD4Gen's "
                                                                     "high-temperature sampling (more diverse)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of teacher pseudo-targets")
    include_gold: bool = Field(False, description="add the gold target to each input's pool of targets (rotated "
                                                  "with the pseudo-targets); required when pseudo_targets is 0")
    max_new_tokens: int = Field(128, ge=1, description="longest pseudo-target, teacher's or student's, in tokens")
    system_prompt: str | None = Field(None, description="a system message sent to the teacher before each prompt "
                                                        "when it writes pseudo-targets")

    # -- student pseudo-targets (joint teaching) ------------------------------------------------------
    alpha: float = Field(0.5, ge=0, le=1, description="share of steps trained on pseudo-targets the current "
                                                      "student generates (teacher logits as soft targets); 0 = "
                                                      "teacher pseudo-targets only, 1 = student ones only, 0.5 "
                                                      "= KD4Gen's joint teaching")
    schedule: Literal["fixed", "random"] = Field(
        "fixed", description="'fixed': the reference code's schedule, student steps on every round(1/alpha)-th "
                             "step; 'random': each step independently with probability alpha")
    student_temperature: float = Field(1.0, gt=0, le=5, description="sampling temperature of student "
                                                                    "pseudo-targets")
    student_top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of student pseudo-targets")
    black_box_student_targets: Literal["error", "teacher_targets"] = Field(
        "error", description="what to do with student steps (alpha > 0) when the teacher is an API whose "
                             "endpoint cannot score a given text. An endpoint that can (the openai endpoint in "
                             "front of vLLM or `stillroom serve`, through prompt_logprobs) scores each student "
                             "pseudo-target, sent as the student's token ids, so the server must use the "
                             "student's tokenizer. Otherwise: 'error' stops with an explanation; "
                             "'teacher_targets' trains on teacher pseudo-targets on those steps instead "
                             "(recorded as fallback_steps)")

    # -- the teacher ------------------------------------------------------------------------------------
    teacher_access: Literal["auto", "logits", "top_logprobs"] = Field(
        "auto", description="how the teacher's distribution is read: 'logits' = full logits of a white-box "
                            "teacher (its .model); 'top_logprobs' = the top-k log-probs its endpoint returns with "
                            "each generated token (API teachers); 'auto' = logits when the teacher has a model")
    top_logprobs: int = Field(20, ge=1, le=20, description="alternatives per position asked of an API teacher "
                                                           "(OpenAI allows at most 20)")
    teacher_top_k: int = Field(20, ge=1, description="alternatives per position kept from a white-box teacher "
                                                     "whose tokenizer differs from the student's")
    teacher_dropout: float = Field(0.0, ge=0, lt=1, description="Noisy KD: dropout probability applied inside "
                                                                "the teacher (its dropout layers, attention "
                                                                "dropout and input embeddings) when it scores "
                                                                "targets; white-box teachers only; 0 = off")

    # -- bookkeeping ------------------------------------------------------------------------------------
    eval_examples: int = Field(32, ge=0, description="training examples whose KD loss on their first teacher "
                                                     "target is measured before and after training (kd_loss_before "
                                                     "/ kd_loss_after in the stage metrics); 0 = skip")

    @model_validator(mode="after")
    def _consistent(self):
        if self.decoding == "greedy" and self.pseudo_targets > 1:
            raise ValueError(f"decoding='greedy' gives one pseudo-target, but pseudo_targets = "
                             f"{self.pseudo_targets}; use decoding='sample' or 'beam' for several")
        if self.pseudo_targets == 0 and not self.include_gold and self.alpha < 1:
            raise ValueError("pseudo_targets = 0 and include_gold = false leave teacher steps nothing to train on; "
                             "set include_gold = true (KD on the gold targets), pseudo_targets >= 1, or alpha = 1")
        if self.loss_kind == "ce" and self.alpha > 0:
            raise ValueError("loss 'ce' ignores the teacher, so student pseudo-targets (alpha > 0) would train "
                             "the student on its own samples; use a KD loss (e.g. 'forward_kl') or alpha = 0")
        if self.loss_kind == "ce" and self.teacher_dropout > 0:
            raise ValueError("teacher_dropout (Noisy KD) perturbs the teacher's soft targets, which loss 'ce' "
                             "does not use; use a KD loss or teacher_dropout = 0")
        return self

    @property
    def loss_kind(self) -> str:
        return str(self.loss.get("kind")) if isinstance(self.loss, dict) else str(self.loss)

    def loss_options(self) -> dict[str, Any]:
        return {k: v for k, v in dict(self.loss).items() if k != "kind"}
