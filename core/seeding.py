"""Seeds: one entry seed and a stage name give every random generator a stage uses its own seed.

A stage's result must depend only on its method, options, seed and data, never on which stages ran before
it in the same process, on ``--resume`` or on ``--jobs``: so every stage reseeds Python, NumPy and torch
from ``derive_seed(entry_seed, stage_name)`` before it starts, and passes the same number to the trainer.
"""

from __future__ import annotations

import hashlib
import random


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
