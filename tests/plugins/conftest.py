"""Loopback fault-injection servers (stillroom.testing.fault_server) for the tests of this folder."""

from __future__ import annotations

import pytest

from stillroom.testing.fault_server import start_fault_server


@pytest.fixture
def servers():
    """``servers(**options)`` starts a fault server; every one started is stopped after the test."""
    started = []

    def start(**options):
        server = start_fault_server(**options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared_server():
    """One fault-free server for the module (starting one takes ~0.5 s)."""
    with start_fault_server() as handle:
        yield handle


@pytest.fixture
def clean(shared_server):
    """The module's fault-free server with fresh counters."""
    shared_server.reset()
    return shared_server
