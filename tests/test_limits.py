"""What one caller may cost a worker: waits for a generation are bounded in time and in number,
so waiting callers never starve deciding ones, and end at shutdown."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from placecheck import PlacementClient
from placecheck.v1 import placement_pb2
from sidecar import start_sidecar

UNREACHABLE = 2**64 - 1
REQUEST = placement_pb2.PlacementRequest(resources={"VCPU": 1})


def waited(placement: PlacementClient, deadline_s: float) -> tuple[grpc.StatusCode, float]:
    """(status, seconds) of a CheckDestination for a generation that never comes."""
    started = time.monotonic()
    try:
        placement.check_destination(REQUEST, ["compute-00001"], min_generation=UNREACHABLE, timeout=deadline_s)
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
    return code, time.monotonic() - started


def decided(placement: PlacementClient) -> grpc.StatusCode:
    try:
        placement.check_destination(REQUEST, ["compute-00001"], timeout=5.0)
        return grpc.StatusCode.OK
    except grpc.RpcError as error:
        return error.code()


def test_waiting_callers_do_not_starve_deciding_ones():
    with start_sidecar(workers=1, demo_hosts=50, metrics=False) as sidecar, \
            PlacementClient(sidecar.decision_target, channels=4) as placement, \
            ThreadPoolExecutor(max_workers=48) as pool:
        waits = [pool.submit(waited, placement, 20.0) for _ in range(8)]
        time.sleep(0.2)  # the waiters are in
        decisions = [pool.submit(decided, placement) for _ in range(40)]
        assert [future.result() for future in decisions] == [grpc.StatusCode.OK] * 40
        for future in waits:
            code, seconds = future.result()
            # FAILED_PRECONDITION, at --max-generation-wait (2 s) or at once, never at the deadline.
            assert code == grpc.StatusCode.FAILED_PRECONDITION and seconds < 5.0


def test_a_wait_ends_with_the_shutdown_within_its_grace():
    with start_sidecar(workers=1, demo_hosts=50, metrics=False,
                       extra_args=("--max-generation-wait", "60", "--grace", "3")) as sidecar, \
            PlacementClient(sidecar.decision_target, channels=1) as placement, \
            ThreadPoolExecutor(max_workers=1) as pool:
        wait = pool.submit(waited, placement, 60.0)
        time.sleep(0.5)
        stopping = time.monotonic()
        sidecar.stop(timeout=10.0)
        stopped_after = time.monotonic() - stopping
        code, _ = wait.result()
        assert code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE)
        assert stopped_after < 3.0 + 1.5, f"stopped after {stopped_after:.1f}s"
