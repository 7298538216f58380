"""The base of every loss that compares the student's and the teacher's next-token distributions with one of
the functions in divergences.py: dense (full logits) and sparse (teacher top-k) losses differ only in how
they build the two distributions, not in how a divergence is taken and reduced."""

from __future__ import annotations

from typing import Any

from stillroom import Loss


class DivergenceLoss(Loss):
    """Base of the divergence losses; subclasses set ``divergence`` to a function name of divergences.py."""

    divergence: str = ""

    @property
    def temperature(self) -> float:
        """The configured softmax temperature (both logit tensors are divided by it)."""
        return self.config.temperature

    def divergence_options(self) -> dict[str, Any]:
        beta = getattr(self.config, "beta", None)  # the generalized JSD's coefficient, where the config has one
        return {} if beta is None else {"beta": beta}

    def reduce_divergence(self, student, teacher, mask, batch: int, time: int, labels, num_items_in_batch):
        """Per-position divergence of two log-prob tensors, reduced as the config asks."""
        from stillroom.plugins.losses import divergences
        from stillroom.plugins.losses.positions import reduce

        divergence = getattr(divergences, self.divergence)
        # Divergences are >= 0; float rounding can leave -1e-9 on identical rows, which is noise, not signal.
        values = divergence(student, teacher, **self.divergence_options()).clamp_min(0)
        return reduce(values, mask, batch, time, labels_given=labels is not None,
                      reduction=self.config.reduction, num_items_in_batch=num_items_in_batch)
