"""Losses over full student and teacher logits: ce, forward_kl, reverse_kl, gjsd and tvd.

Call ``loss(student_logits, teacher_logits, labels=None)`` with (batch, time, vocab) tensors already aligned
(logits at position t are scored against labels[t]). Work happens in float32 whatever the input dtype, so bf16
logits give neither NaN nor negative divergences. torch is imported on first call, so registering these
classes (``stillroom list``, spec validation) stays fast.
"""

from __future__ import annotations

from stillroom import Loss, UserError
from stillroom.plugins.losses.divergence_loss import DivergenceLoss
from stillroom.plugins.losses.config import GJSDConfig, LossConfig


class DenseDivergence(DivergenceLoss):
    """Base of the losses comparing the student's and the teacher's full next-token distributions."""

    Config = LossConfig

    def __call__(self, student_logits, teacher_logits=None, labels=None, *, num_items_in_batch=None):
        import torch
        import torch.nn.functional as F

        from stillroom.plugins.losses.positions import check_logits, position_mask, select

        where = f"loss[{self.name}]"
        batch, time, vocab = check_logits(student_logits, where)
        if not isinstance(teacher_logits, torch.Tensor):
            raise UserError(f"needs the teacher's full logits as a tensor, got {type(teacher_logits).__name__}; "
                            "with teacher top-k log-probs use a topk_* loss", where)
        if tuple(teacher_logits.shape) != (batch, time, vocab):
            raise UserError(f"teacher logits {tuple(teacher_logits.shape)} do not match student logits "
                            f"{(batch, time, vocab)}; different vocabularies need a top-k loss over a shared "
                            "vocabulary or the on_policy method's cross_tokenizer option", where)
        mask = position_mask(labels, batch, time, student_logits.device, where)
        temperature = self.config.temperature
        student = F.log_softmax(select(student_logits, mask).float() / temperature, dim=-1)
        teacher = F.log_softmax(select(teacher_logits, mask).to(student.device).float() / temperature, dim=-1)
        return self.reduce_divergence(student, teacher, mask, batch, time, labels, num_items_in_batch)


class ForwardKL(DenseDivergence):
    """Forward KL(teacher || student) per token: classic word-level knowledge distillation."""

    name = "forward_kl"
    divergence = "forward_kl"


class ReverseKL(DenseDivergence):
    """Reverse KL(student || teacher) per token: mode-seeking, as in MiniLLM and on-policy distillation."""

    name = "reverse_kl"
    divergence = "reverse_kl"


class GeneralizedJSD(DenseDivergence):
    """TRL's generalized Jensen-Shannon divergence (GKD), equal to GKDTrainer.generalized_jsd_loss."""

    name = "gjsd"
    Config = GJSDConfig
    divergence = "generalized_jsd"


class TotalVariation(DenseDivergence):
    """Total variation distance between the student's and the teacher's next-token distributions."""

    name = "tvd"
    divergence = "total_variation"


class CrossEntropy(Loss):
    """Cross-entropy of the student on the label tokens; the teacher is ignored (the supervised baseline)."""

    name = "ce"
    Config = LossConfig

    @property
    def temperature(self) -> float:
        """The configured softmax temperature of the student's logits."""
        return self.config.temperature

    def __call__(self, student_logits, teacher_logits=None, labels=None, *, num_items_in_batch=None):
        import torch.nn.functional as F

        from stillroom.plugins.losses.positions import check_logits, position_mask, reduce, select

        where = f"loss[{self.name}]"
        batch, time, vocab = check_logits(student_logits, where)
        if labels is None:
            raise UserError("cross-entropy needs labels (the target token ids, -100 where ignored)", where)
        mask = position_mask(labels, batch, time, student_logits.device, where)
        targets = select(labels.to(student_logits.device), mask).long()
        if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
            raise UserError(f"labels hold ids outside the vocabulary [0, {vocab}) at counted positions", where)
        log_probs = F.log_softmax(select(student_logits, mask).float() / self.config.temperature, dim=-1)
        values = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return reduce(values, mask, batch, time, labels_given=True, reduction=self.config.reduction,
                      num_items_in_batch=num_items_in_batch)
