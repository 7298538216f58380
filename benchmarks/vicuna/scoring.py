"""Vicuna-bench arithmetic: the candidate's total relative to the reference's total, its bootstrap
confidence interval over questions, win/tie/loss counts and the per-category breakdown."""

from __future__ import annotations

from typing import Any


def relative_score(model: list[float], reference: list[float]) -> float | None:
    """100 × (sum of the model's scores) / (sum of the reference's scores), as "% of ChatGPT" in Vicuna."""
    total = float(sum(reference))
    return 100.0 * float(sum(model)) / total if total else None


def bootstrap_relative(model: list[float], reference: list[float], *, samples: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> dict[str, float | None]:
    """Percentile bootstrap of the relative score, resampling questions with replacement.

    Returns ``low``, ``high`` (the (1-confidence)/2 and (1+confidence)/2 percentiles) and ``stderr`` (the
    standard deviation of the resampled scores). Resamples whose reference total is 0 are skipped."""
    import numpy as np  # here, not at import: loading the plugin must stay cheap (`stillroom --help`)

    m = np.asarray(model, dtype=float)
    r = np.asarray(reference, dtype=float)
    if len(m) == 0:
        return {"low": None, "high": None, "stderr": None}
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(m), size=(samples, len(m)))
    ref_totals = r[index].sum(axis=1)
    keep = ref_totals != 0
    values = 100.0 * m[index].sum(axis=1)[keep] / ref_totals[keep]
    if len(values) == 0:
        return {"low": None, "high": None, "stderr": None}
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return {"low": float(low), "high": float(high), "stderr": float(values.std(ddof=1)) if len(values) > 1 else 0.0}


def outcomes(model: list[float], reference: list[float]) -> dict[str, int]:
    """How often the model scored above, equal to, or below the reference on a question."""
    win = sum(a > b for a, b in zip(model, reference))
    loss = sum(a < b for a, b in zip(model, reference))
    return {"win": win, "tie": len(model) - win - loss, "loss": loss}


def summarize(rows: list[dict[str, Any]], *, samples: int, confidence: float, seed: int) -> dict[str, Any]:
    """Relative score, CI, outcomes and per-category breakdown of rows with ``model_score``,
    ``reference_score``, ``category`` and ``failed``."""
    usable = [row for row in rows if not row["failed"]]
    model = [row["model_score"] for row in usable]
    reference = [row["reference_score"] for row in usable]
    out: dict[str, Any] = {
        "relative_score": relative_score(model, reference), "n": len(usable), "failed": len(rows) - len(usable),
        "model_total": float(sum(model)), "reference_total": float(sum(reference)),
        **outcomes(model, reference),
        "ci": bootstrap_relative(model, reference, samples=samples, confidence=confidence, seed=seed),
    }
    categories: dict[str, dict[str, Any]] = {}
    for name in sorted({row["category"] for row in usable}):
        m = [row["model_score"] for row in usable if row["category"] == name]
        r = [row["reference_score"] for row in usable if row["category"] == name]
        categories[name] = {"relative_score": relative_score(m, r), "n": len(m), "model_total": float(sum(m)),
                            "reference_total": float(sum(r)), **outcomes(m, r)}
    out["categories"] = categories
    return out
