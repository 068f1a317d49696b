"""Shared memory is trusted only as far as it is checked.

A live snapshot segment is overwritten in place (as a process of the same user could): the
workers find it out by verifying the checksum again, report NOT_SERVING and answer UNAVAILABLE
instead of deciding on it, none of them dies, and a newer generation brings them back. The
state owner's columns are the published segment's pages, so it checks them too and rebuilds the
fleet from its store rather than derive anything from a damaged segment (nothing damaged is
published again). Kernels refuse a host
whose value id points outside its table rather than read past it.
"""
from __future__ import annotations

import contextlib
import json
import mmap
import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from placecheck_engine import _fastfilters
from placecheck_engine.snapshot import _HEADER, HEADER_SIZE, segment_name
from placecheck import PlacementClient, StateClient
from placecheck.v1 import fleet_pb2, placement_pb2, state_pb2
from sidecar import start_sidecar, wait_for

FLEET = {"hosts": [{"name": "host-a", "resources": {"VCPU": {"total": 16}}},
                   {"name": "host-b", "resources": {"VCPU": {"total": 16}}}]}
REQUEST = placement_pb2.PlacementRequest(resources={"VCPU": 8})
TIMEOUT_S = 10.0


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="placecheck.v1.PlacementCheck"), timeout=TIMEOUT_S).status


def overwrite_column(path: str, column: str, value: int) -> None:
    """Set every element of one column of a published segment, in place."""
    with open(path, "r+b") as file, mmap.mmap(file.fileno(), 0) as segment:
        toc_offset, toc_length = _HEADER.unpack_from(segment, 0)[6:8]
        toc = json.loads(segment[toc_offset:toc_offset + toc_length])
        [entry] = [entry for entry in toc["arrays"] if entry["name"] == column]
        array = np.ndarray(tuple(entry["shape"]), np.lib.format.descr_to_dtype(entry["dtype"]),
                           buffer=segment, offset=entry["offset"])
        array[...] = value
        del array
        assert entry["offset"] >= HEADER_SIZE


@contextlib.contextmanager
def sidecar_and_clients(workers: int, verify_interval_s: float):
    """A sidecar on FLEET whose processes verify the segments every verify_interval_s, with a state
    client and a decision client of one channel per worker."""
    with start_sidecar(fleet=FLEET, workers=workers, metrics=False,
                       extra_args=("--snapshot-verify-interval", str(verify_interval_s))) as sidecar, \
            StateClient(sidecar.state_target) as state, \
            PlacementClient(sidecar.decision_target, channels=workers) as placement:
        yield sidecar, state, placement


def allowed(placement: PlacementClient) -> list[bool]:
    response = placement.check_destination(REQUEST, ["host-a", "host-b"], timeout=TIMEOUT_S)
    return [verdict.allowed for verdict in response.verdicts]


def test_a_damaged_segment_is_refused_until_a_good_generation_arrives():
    """A usage delta's segment is damaged (the state owner keeps its own copy of a delta, so
    only the workers read the damage): they refuse it, and the next usage update brings them back."""
    with sidecar_and_clients(2, verify_interval_s=0.2) as (sidecar, state, placement):
        workers = sorted(sidecar.worker_pids())
        assert allowed(placement) == [True, True]
        generation = state.update_usage([state_pb2.HostUsage(name="host-a", used={"VCPU": 2})], timeout=TIMEOUT_S)
        wait_for(lambda: allowed_after(placement, generation) == [True, True], "the workers to read the delta")
        overwrite_column(f"/dev/shm/{segment_name(f'placecheck-{sidecar.pid}', generation)}", "rc_free", 0)

        wait_for(lambda: health(sidecar.decision_target) == health_pb2.HealthCheckResponse.NOT_SERVING,
                 "a worker to find the damage")
        time.sleep(1.0)  # five verify intervals: every worker has found it
        for _ in range(6):  # both workers, whichever answers
            try:
                allowed(placement)
                raise AssertionError("decided on a damaged segment")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE and "damaged" in error.details()

        state.update_usage([state_pb2.HostUsage(name="host-b", used={"VCPU": 2})], timeout=TIMEOUT_S)
        wait_for(lambda: health(sidecar.decision_target) == health_pb2.HealthCheckResponse.SERVING,
                 "the workers to serve the new generation")
        assert allowed(placement) == [True, True]
        assert sorted(sidecar.worker_pids()) == workers, "a worker died"


def test_a_write_on_a_damaged_base_splices_the_store_s_fleet_not_the_damage():
    """The state owner's columns are the published base segment's pages: a host change made while
    that segment is damaged starts from the fleet read back from the store."""
    with sidecar_and_clients(1, verify_interval_s=60.0) as (sidecar, state, placement):
        generation = state.status(timeout=TIMEOUT_S).generation
        overwrite_column(f"/dev/shm/{segment_name(f'placecheck-{sidecar.pid}', generation)}", "rc_total", 0)
        written = state.upsert_hosts([fleet_pb2.Host(name="host-c", resources={"VCPU": fleet_pb2.Inventory(total=4)})],
                                     timeout=TIMEOUT_S)
        wait_for(lambda: allowed_after(placement, written) == [True, True], "the worker to read the new base")
        assert vcpu_totals(placement) == {"host-a": 16, "host-b": 16}


def allowed_after(placement: PlacementClient, generation: int) -> list[bool]:
    response = placement.check_destination(REQUEST, ["host-a", "host-b"], min_generation=generation,
                                           timeout=TIMEOUT_S)
    return [verdict.allowed for verdict in response.verdicts]


def vcpu_totals(placement: PlacementClient) -> dict[str, float]:
    """Each host's VCPU total, as a refusal's numbers give it (read from the published columns)."""
    response = placement.check_destination(placement_pb2.PlacementRequest(resources={"VCPU": 64}),
                                           ["host-a", "host-b"], timeout=TIMEOUT_S)
    return {verdict.host: rejection.numbers.total for verdict in response.verdicts
            for rejection in verdict.rejections if rejection.rule == "resource:VCPU"}


def test_a_damaged_segment_is_published_again_from_the_store_without_a_write():
    """A fleet that only usage updates write gets no new base of its own: the state owner checks
    the published segment as the workers do and publishes the fleet again from its store."""
    with sidecar_and_clients(1, verify_interval_s=0.2) as (sidecar, state, placement):
        generation = state.status(timeout=TIMEOUT_S).generation
        overwrite_column(f"/dev/shm/{segment_name(f'placecheck-{sidecar.pid}', generation)}", "rc_total", 0)
        wait_for(lambda: state.status(timeout=TIMEOUT_S).generation > generation,
                 "the state owner to publish the fleet again")
        wait_for(lambda: health(sidecar.decision_target) == health_pb2.HealthCheckResponse.SERVING,
                 "the worker to serve the restored generation")
        assert vcpu_totals(placement) == {"host-a": 16, "host-b": 16}


def test_a_value_id_outside_its_table_refuses_the_host():
    ids = np.array([0, 1, 2, -1, 2**31 - 1], dtype=np.int32)
    refused_by_value = np.array([0, 1], dtype=np.uint8)
    fail_bits = np.zeros(len(ids), dtype=np.uint64)
    assert _fastfilters.RefusedValuesKernel(ids, refused_by_value).scan(fail_bits, 0, 0, len(ids)) == 4
    assert fail_bits.tolist() == [0, 1, 1, 1, 1]
    limits = np.array([5, 5], dtype=np.int64)
    counts = np.zeros(len(ids), dtype=np.int32)
    fail_bits[:] = 0
    assert _fastfilters.CountBelowValueLimitKernel(counts, ids, limits).scan(fail_bits, 0, 0, len(ids), 0) == 3
    assert fail_bits.tolist() == [0, 0, 1, 1, 1]
