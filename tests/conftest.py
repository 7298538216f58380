"""Fixtures shared by the test folders of this repository. (What plugin authors get too, tiny models and a fresh
host, is the shipped pytest plugin's: stillroom.testing.)"""

from __future__ import annotations

import pytest


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test, then as it was. Tiny models gain nothing from more threads,
    and on a shared machine extra threads stall each other (spin-waiting on a core another process holds).
    A module opts in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
