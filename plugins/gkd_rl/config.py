"""Options of the gkd_rl method. The divergence and the reward are components named by kind, validated when
the spec is loaded; the optimisation options mean what they mean for every other method."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stillroom import ComponentRef, MethodConfig, RewardScorer


class GKDRLOptions(MethodConfig):
    """Options of the gkd_rl method: maximise (1 - alpha)*E[reward] - alpha*D(teacher||student) on the student's
    own samples."""

    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the distillation term: the loss is "
                                                          "(1 - alpha)*policy-gradient loss + alpha*divergence; "
                                                          "1 = on-policy GKD with `loss` on the same samples, "
                                                          "0 = pure RL on the reward (the teacher is not run)")
    reward: ComponentRef("evaluator", "judge", implements=RewardScorer) | None = Field(  # type: ignore[valid-type]
        None, description="what scores each sampled completion, an evaluator or judge that implements "
                          "RewardScorer: {kind = \"exact_match\"} (answer correctness), {kind = \"rouge\", "
                          "rouge_types = [\"rouge2\"]}, {kind = \"llm\", endpoint = \"judge\", protocol = "
                          "\"single\"}; required unless alpha = 1")
    loss: ComponentRef("loss") = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"kind": "reverse_kl"},
        description="the divergence to the white-box teacher on the sampled completions, any dense loss plugin: "
                    "\"reverse_kl\" (default; today's on-policy distillation), {kind = \"gjsd\", beta = 0.9} "
                    "(the GKD paper's JSD(0.9)), \"forward_kl\"")
    num_generations: int = Field(4, ge=2, description="completions sampled per prompt; advantages are rewards "
                                                      "normalised within each prompt's group (GRPO)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the student's completions (the "
                                                      "divergence is taken at temperature 1, as gkd does)")
    max_new_tokens: int = Field(40, ge=1, description="most tokens generated per completion")
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field(
        "dapo", description="how TRL's GRPO averages the policy-gradient loss over tokens (TRL's default 'dapo': "
                            "over all completion tokens of the batch, as the divergence is)")
    epsilon: float = Field(0.2, gt=0, description="PPO-style clipping range of the importance ratio")
    learning_rate: float = Field(1e-5, gt=0, description="peak AdamW learning rate; budget.learning_rate "
                                                         "overrides it")
    steps: int | None = Field(None, ge=1, description="optimizer steps (TRL max_steps); None trains one epoch "
                                                      "over the prompts; budget.steps overrides it")
    batch_size: int = Field(16, ge=1, description="sampled completions trained on per optimizer step (the "
                                                  "sequence count every method's batch means), so batch_size / "
                                                  "num_generations prompts per step; budget.batch_size overrides "
                                                  "it")
    train_examples: int | None = Field(None, ge=1, description="use only the first N training prompts; "
                                                               "budget.train_examples overrides it")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of the steps spent warming the learning "
                                                             "rate up linearly")

    @model_validator(mode="after")
    def _reward_unless_pure_distillation(self):
        if self.reward is None and self.alpha < 1.0:
            raise ValueError(f"alpha = {self.alpha} trains on a reward: set reward (e.g. reward = "
                             "{kind = \"exact_match\"}), or alpha = 1 for on-policy distillation alone")
        return self
