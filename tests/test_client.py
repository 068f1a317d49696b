"""The Python client against a real sidecar (and, for channel spreading, an in-process server)."""
from __future__ import annotations

import glob
import socket
import time
from concurrent import futures

import grpc
import pytest
from prometheus_client.multiprocess import MultiProcessCollector

from placecheck import PlacementClient, StateClient, bad_request_violations, wait_until_serving
from placecheck.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc, state_pb2
from sidecar import start_sidecar

RPC_TIMEOUT_SECONDS = 10.0
STARTUP_DEMO_HOSTS = 10  # every test replaces the fleet first


def small_host(name: str, *, memory_used: int = 0, instances: tuple[str, ...] = ()) -> fleet_pb2.Host:
    return fleet_pb2.Host(name=name, instances=instances, num_instances=len(instances), resources={
        "VCPU": fleet_pb2.Inventory(total=16, allocation_ratio=4.0),
        "MEMORY_MB": fleet_pb2.Inventory(total=32768, used=memory_used),
        "DISK_GB": fleet_pb2.Inventory(total=500),
    })


def small_request(memory_mb: int = 4096) -> placement_pb2.PlacementRequest:
    return placement_pb2.PlacementRequest(resources={"VCPU": 2, "MEMORY_MB": memory_mb, "DISK_GB": 20})


@pytest.fixture(scope="module")
def client_sidecar():
    """A sidecar of this module's own: these tests replace its fleet, which the session's must keep."""
    with start_sidecar(workers=2, demo_hosts=STARTUP_DEMO_HOSTS) as running:
        yield running


@pytest.fixture
def state(client_sidecar):
    with StateClient(client_sidecar.state_target) as client:
        yield client


@pytest.fixture
def placement(client_sidecar):
    with PlacementClient(client_sidecar.decision_target, channels=2) as client:
        yield client


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PeerRecorder(placement_pb2_grpc.PlacementCheckServicer):
    def __init__(self):
        self.peers: list[str] = []

    def CheckDestination(self, request, context):
        self.peers.append(context.peer())
        return placement_pb2.CheckDestinationResponse()


def test_each_channel_is_its_own_connection_and_calls_round_robin():
    recorder = PeerRecorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    placement_pb2_grpc.add_PlacementCheckServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with PlacementClient(f"127.0.0.1:{port}", channels=4) as client:
            for _ in range(8):
                client.check_destination(small_request(), ["host0"], timeout=RPC_TIMEOUT_SECONDS)
    finally:
        server.stop(grace=None)
    # Four connections (four client ports), each used by every fourth call.
    assert len(set(recorder.peers)) == 4
    assert recorder.peers[:4] == recorder.peers[4:]


def test_wait_until_serving_times_out_cleanly_on_a_closed_port():
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="not serving"):
        wait_until_serving(f"127.0.0.1:{closed_port()}", timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 2.0


def decisions_answered_by(sidecar, worker_pid: int) -> float:
    """CheckDestination calls one worker answered, from its own prometheus multiprocess file
    (which it writes on its first count: no file, no call)."""
    counter_files = glob.glob(str(sidecar.tmpdir / "placecheck-metrics-*" / f"counter_{worker_pid}.db"))
    return sum(sample.value
               for family in MultiProcessCollector.merge(counter_files)
               if family.name == "placecheck_decisions"
               for sample in family.samples
               if sample.name == "placecheck_decisions_total" and sample.labels["rpc"] == "CheckDestination")


def test_calls_spread_over_both_sidecar_workers(client_sidecar, state):
    generation = state.replace_fleet(fleet_pb2.Fleet(hosts=[small_host("host0")]))
    calls = 64
    # 16 connections: the chance that SO_REUSEPORT hashes all of them onto one of 2 workers is 2**-15.
    with PlacementClient(client_sidecar.decision_target, channels=16) as client:
        for _ in range(calls):
            client.check_destination(small_request(), ["host0"], min_generation=generation,
                                     timeout=RPC_TIMEOUT_SECONDS)
    # Counter files are written as the value changes; no wait is needed once the calls returned.
    answered = [decisions_answered_by(client_sidecar, pid) for pid in client_sidecar.worker_pids()]
    assert len(answered) == 2 and sum(answered) >= calls
    assert all(count > 0 for count in answered), answered


def test_wait_until_serving_returns_once_the_sidecar_serves(client_sidecar):
    started = time.monotonic()
    wait_until_serving(client_sidecar.decision_target, timeout=5)
    assert time.monotonic() - started < 1.0


def test_state_round_trip_and_read_your_writes(state, placement):
    generation = state.replace_fleet(fleet_pb2.Fleet(
        hosts=[small_host("host0"), small_host("host1")],
        aggregates=[fleet_pb2.Aggregate(id=1, name="agg1", hosts=["host0"])]))
    status = state.status()
    assert (status.generation, status.host_count, status.aggregate_count) == (generation, 2, 1)

    after_upsert = state.upsert_hosts([small_host("host2")])
    assert after_upsert > generation and state.status().host_count == 3

    after_usage = state.update_usage([state_pb2.HostUsage(name="host1", used={"MEMORY_MB": 30000})])
    assert after_usage > after_upsert
    answer = placement.check_destination(small_request(), ["host0", "host1", "host2"],
                                         min_generation=after_usage, timeout=RPC_TIMEOUT_SECONDS)
    assert answer.generation >= after_usage
    assert [verdict.allowed for verdict in answer.verdicts] == [True, False, True]
    assert [rejection.rule for rejection in answer.verdicts[1].rejections] == ["resource:MEMORY_MB"]

    after_aggregates = state.upsert_aggregates([fleet_pb2.Aggregate(id=2, name="agg2", hosts=["host1"])])
    assert after_aggregates > after_usage and state.status().aggregate_count == 2
    after_aggregate_removal = state.remove_aggregates([1])
    assert after_aggregate_removal > after_aggregates and state.status().aggregate_count == 1
    after_removal = state.remove_hosts(["host2"])
    assert after_removal > after_aggregate_removal and state.status().host_count == 2


def test_remove_of_an_unknown_host_is_not_found(state):
    state.replace_fleet(fleet_pb2.Fleet(hosts=[small_host("host0")]))
    with pytest.raises(grpc.RpcError) as raised:
        state.remove_hosts(["no-such-host"])
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_select_destinations_ranks_and_counts_eliminations(state, placement):
    generation = state.replace_fleet(fleet_pb2.Fleet(hosts=[
        small_host("full", memory_used=32768), small_host("busy", memory_used=16384), small_host("idle")]))
    answer = placement.select_destinations(small_request(), max_alternates=1, min_generation=generation,
                                           timeout=RPC_TIMEOUT_SECONDS)
    # RAMWeigher (multiplier 1.0) prefers the most free memory.
    [only] = answer.placements
    assert only.selected.host == "idle"
    assert [alternate.host for alternate in only.alternates] == ["busy"]
    assert answer.summary.hosts_evaluated == 3 and answer.summary.hosts_passed == 2

    too_big = placement.select_destinations(small_request(memory_mb=65536), min_generation=generation,
                                            timeout=RPC_TIMEOUT_SECONDS)
    assert not too_big.placements
    assert {(e.rule, e.hosts) for e in too_big.summary.eliminations} >= {("resource:MEMORY_MB", 3)}


def test_bad_request_violations_decodes_a_real_invalid_argument(state, placement):
    generation = state.replace_fleet(fleet_pb2.Fleet(hosts=[small_host("host0")]))
    negative = placement_pb2.PlacementRequest(resources={"VCPU": -1})
    with pytest.raises(grpc.RpcError) as raised:
        placement.check_destination(negative, ["host0"], min_generation=generation, timeout=RPC_TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, description)] = bad_request_violations(raised.value)
    assert field == "request.resources[VCPU]"
    assert description


def test_bad_request_violations_is_empty_without_a_bad_request(state, placement):
    generation = state.replace_fleet(fleet_pb2.Fleet(hosts=[small_host("host0")]))
    with pytest.raises(grpc.RpcError) as raised:
        placement.check_destination(small_request(), ["no-such-host"], min_generation=generation,
                                    timeout=RPC_TIMEOUT_SECONDS)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert bad_request_violations(raised.value) == []
