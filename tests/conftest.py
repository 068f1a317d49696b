"""Shared fixtures: one real sidecar for the whole session; a private shared-memory prefix."""
from __future__ import annotations

import os
import uuid

import pytest

from placecheck_engine.snapshot import SHM_DIR
from sidecar import start_sidecar

SESSION_DEMO_HOSTS = 2_000  # small enough to start in seconds, big enough to rank


@pytest.fixture(scope="session")
def sidecar():
    """The real sidecar: 2 decision workers, a demo fleet of 2,000 hosts, metrics on."""
    with start_sidecar(workers=2, demo_hosts=SESSION_DEMO_HOSTS) as running:
        yield running


@pytest.fixture
def prefix():
    """A shared-memory name prefix of this test's own; its segments are removed afterwards."""
    name = f"pctest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield name
    for entry in os.listdir(SHM_DIR):
        if entry.startswith(name + "."):
            os.unlink(os.path.join(SHM_DIR, entry))
