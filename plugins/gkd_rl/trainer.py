"""TRL's GRPOTrainer with a distillation term: the student samples a group of completions per prompt, a reward
scores each one, and the loss is ``(1 - alpha) * GRPO's policy-gradient loss + alpha * D(teacher || student)``
on those same completions. Sampling, reward bookkeeping, group-normalised advantages, clipping and
distribution are TRL's; this module adds only the divergence term, the mix, and what the budget records.

At alpha = 1 GRPO's policy loss is not computed at all, so the loss is exactly the divergence plugin on the
student's and the teacher's logits over the sampled completion tokens (on-policy GKD); at alpha = 0 the teacher
is never run, so it cannot influence the update. For 0 < alpha < 1 the student runs forward twice per batch
(GRPO's fused log-prob pass, then full logits for the divergence): simpler than re-deriving GRPO's loss from
one pass, and cheap next to sampling.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields


@dataclass
class RewardUsage:
    """What rewarding cost in this process: completions scored, and the reward endpoint's calls and tokens."""

    reward_calls: int = 0
    reward_tokens: int = 0
    judge_calls_paid: int = 0
    judge_cache_hits: int = 0

    def totals(self, device=None) -> dict[str, int]:
        """Summed over the processes of a distributed run (every rank scores its own completions), as the
        engine sums its consumption."""
        from stillroom.training import summed_over_ranks

        values = summed_over_ranks([getattr(self, f.name) for f in fields(self)], device)
        return {f.name: value for f, value in zip(fields(self), values)}


def reward_function(scorer, usage: RewardUsage):
    """A TRL reward function (``prompts``, ``completions`` and the dataset's ``reference`` column in, one float per
    completion out) over a RewardScorer; counts the completions it scores and what its endpoint spent."""
    endpoint = scorer.reward_endpoint()

    def spent() -> tuple[int, int, int]:
        if endpoint is None:
            return 0, 0, 0
        stats = endpoint.stats
        tokens = stats.get("prompt_tokens", 0) + stats.get("completion_tokens", 0) + stats.get("cached_tokens", 0)
        return int(tokens), int(stats.get("requests", 0)), int(stats.get("cache_hits", 0))

    def text(message) -> str:
        # conversational rows are message lists: the prompt's question is its last user turn, the completion the
        # assistant message TRL built from the sampled tokens
        return message[-1]["content"] if isinstance(message, list) else str(message)

    def reward(prompts, completions, reference=None, **_):
        references = list(reference) if reference is not None else [None] * len(completions)
        before = spent()
        values = scorer.reward([text(p) for p in prompts], [text(c) for c in completions], references)
        after = spent()
        usage.reward_calls += len(completions)
        usage.reward_tokens += after[0] - before[0]
        usage.judge_calls_paid += after[1] - before[1]
        usage.judge_cache_hits += after[2] - before[2]
        return [float(v) for v in values]

    reward.__name__ = f"reward_{scorer.name}"
    return reward


def no_reward():
    """The reward at alpha = 1 without a reward component: zero for every completion (GRPO needs one function)."""

    def zero(prompts, completions, **_):
        return [0.0] * len(completions)

    zero.__name__ = "no_reward"
    return zero


@functools.lru_cache(maxsize=None)
def trainer_class():
    """GRPOTrainer plus the teacher divergence (built lazily: TRL is heavy)."""
    import torch
    from trl import GRPOTrainer

    from stillroom.training import ConsumptionMixin

    class GKDRLTrainer(ConsumptionMixin, GRPOTrainer):
        """TRL's GRPOTrainer whose loss mixes GRPO's policy-gradient loss with a divergence to a white-box teacher
        on the same sampled completions."""

        def __init__(self, *args, teacher_model=None, divergence=None, alpha: float, **kwargs):
            if alpha > 0 and (teacher_model is None or divergence is None):
                raise ValueError("alpha > 0 needs a teacher model and a divergence")
            self.alpha = float(alpha)
            self.divergence = divergence
            super().__init__(*args, **kwargs)
            self.teacher_model = None
            if alpha > 0:
                # as TRL's GKDTrainer does: on the training device, never wrapped for gradients
                self.teacher_model = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)
                self.teacher_model.eval()

        def _generate_and_score_completions(self, inputs):
            batch = super()._generate_and_score_completions(inputs)
            self.consumption.student_generated_tokens += int(batch["completion_mask"].sum())
            return batch

        def sequence_logits(self, model, inputs):
            """(input ids, attention mask, labels) of prompt + completion and the model's logits aligned with the
            completion tokens; labels are the completion ids with padding set to -100."""
            completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
            input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
            attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
            keep = completion_ids.size(1)
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -keep - 1:-1, :]
            labels = completion_ids.masked_fill(completion_mask == 0, -100)
            return input_ids, attention_mask, labels, logits

        def teacher_divergence(self, model, inputs):
            """The divergence plugin on the student's and the teacher's logits over the sampled completions."""
            input_ids, attention_mask, labels, student_logits = self.sequence_logits(model, inputs)
            with torch.no_grad():
                keep = labels.size(1)
                teacher_logits = self.teacher_model(input_ids=input_ids,
                                                    attention_mask=attention_mask).logits[:, -keep - 1:-1, :]
            self.consumption.teacher_forward_tokens += int(attention_mask.sum())
            return self.divergence(student_logits, teacher_logits, labels)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                raise ValueError("the gkd_rl trainer does not return model outputs")
            mode = "train" if self.model.training else "eval"
            self.count_batch(inputs)  # prompt + completion tokens of each sampled sequence
            loss = None
            if self.alpha < 1.0:
                # GRPO's own loss, already scaled for gradient accumulation
                loss = (1.0 - self.alpha) * self._compute_loss(model, inputs)
            if self.alpha > 0.0:
                divergence = self.teacher_divergence(model, inputs)
                self.note(divergence=float(divergence.detach()))
                accumulation = self.current_gradient_accumulation_steps if mode == "train" else 1
                term = self.alpha * divergence / accumulation
                loss = term if loss is None else loss + term
            return loss

    return GKDRLTrainer
