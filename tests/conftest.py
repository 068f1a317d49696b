"""Shared fixtures: one real sidecar for the whole session."""
from __future__ import annotations

import pytest

from sidecar import start_sidecar

SESSION_DEMO_HOSTS = 2_000  # small enough to start in seconds, big enough to rank


@pytest.fixture(scope="session")
def sidecar():
    """The real sidecar: 2 decision workers, a demo fleet of 2,000 hosts, metrics on."""
    with start_sidecar(workers=2, demo_hosts=SESSION_DEMO_HOSTS) as running:
        yield running
