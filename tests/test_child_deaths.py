"""The supervisor outlives any of its children: workers, multiprocessing's fork server and its
resource tracker."""
from __future__ import annotations

import os
import signal

from placecheck import PlacementClient, StateClient, wait_until_serving
from placecheck.v1 import placement_pb2, state_pb2
from placecheck_server.rundir import running
from sidecar import start_sidecar, wait_for

TIMEOUT_S = 10.0
# Alternately the fork server first (every worker loses it at once) and a worker first (the fork
# server then dies while the supervisor restarts that worker: the start itself fails, EOFError).
ROUNDS = 6


def small_request() -> placement_pb2.PlacementRequest:
    return placement_pb2.PlacementRequest(resources={"VCPU": 2, "MEMORY_MB": 4_096, "DISK_GB": 20})


def test_killing_the_fork_server_and_a_worker_leaves_the_supervisor_serving():
    with start_sidecar(workers=2, demo_hosts=200) as sidecar:
        for round_number in range(ROUNDS):
            [fork_server] = sidecar.fork_server_pids()
            workers = sidecar.worker_pids()
            assert len(workers) == 2
            victims = [fork_server, workers[0]] + (sidecar.other_child_pids() if round_number == 0 else [])
            for pid in victims if round_number % 2 == 0 else reversed(victims):
                os.kill(pid, signal.SIGKILL)
            # Two fresh workers from a fresh fork server; the one left running drains and stops.
            fresh = wait_for(lambda: (now := sidecar.worker_pids()) and len(now) == 2
                             and not set(now) & set(workers) and now, "two new workers")
            assert sidecar.fork_server_pids() != [fork_server]
            wait_for(lambda: not any(running(pid) for pid in workers), "the old workers to stop")
            assert sidecar.process.poll() is None, sidecar.log()[-4000:]
            wait_until_serving(sidecar.decision_target, timeout=30)
            with PlacementClient(sidecar.decision_target, channels=8) as client:
                for _ in range(16):
                    assert client.select_destinations(small_request(), timeout=TIMEOUT_S).placements
            assert sorted(sidecar.worker_pids()) == sorted(fresh)
        assert "lost its fork server" in sidecar.log()
        with StateClient(sidecar.state_target) as state:  # writes publish, the resource tracker long gone
            generation = state.update_usage([state_pb2.HostUsage(name="compute-00001", used={"VCPU": 1})],
                                            timeout=TIMEOUT_S)
        with PlacementClient(sidecar.decision_target, channels=2) as client:
            assert client.select_destinations(small_request(), min_generation=generation,
                                              timeout=TIMEOUT_S).generation == generation
