"""`ps` names placecheck's processes (setproctitle) instead of `python -B -c from multiprocessing...`."""
from __future__ import annotations

from pathlib import Path


def title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def test_supervisor_fork_server_and_workers_carry_their_titles(sidecar):
    assert title(sidecar.pid) == "placecheck-supervisor"
    [fork_server] = sidecar.fork_server_pids()  # found by its title among the supervisor's children
    assert title(fork_server) == "placecheck-forkserver"
    workers = sidecar.worker_pids()
    assert sorted(title(pid) for pid in workers) == [f"placecheck-worker-{index}" for index in range(len(workers))]
    assert len(workers) == 2
