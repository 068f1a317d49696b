"""The Python client's call policy against the real sidecar: the default deadline, gRPC's own
retries (paced by the sidecar's RetryInfo, sent as gRPC's retry pushback), and readiness through
grpc.health.v1's Watch. Attempts are counted by the sidecar (placecheck_grpc_server_handled_total)."""
from __future__ import annotations

import threading
import time
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from placecheck import NO_RETRIES, PlacementClient, RetryPolicy, StateClient, wait_until_serving, worker_target
from placecheck.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc
from sidecar import start_sidecar, wait_for

HOST = "retry-host-1"
UNREACHABLE_GENERATION = 10**9  # a min_generation no write reaches: the sidecar waits for it
MAX_GENERATION_WAIT_S = 2.0  # the sidecar's default --max-generation-wait
NO_SNAPSHOT_RETRY_DELAY_S = 0.1  # server/errors.py: the RetryInfo of UNAVAILABLE NO_SNAPSHOT
CALLS_ADMITTED_PER_THREAD = 128  # server/worker.py MAX_CALLS_PER_THREAD
ONE_THREAD = ("--threads-per-worker", "1")


def one_host_fleet() -> fleet_pb2.Fleet:
    return fleet_pb2.Fleet(hosts=[fleet_pb2.Host(name=HOST, resources={
        "VCPU": fleet_pb2.Inventory(total=16), "MEMORY_MB": fleet_pb2.Inventory(total=32768)})])


def workload() -> placement_pb2.PlacementRequest:
    return placement_pb2.PlacementRequest(resources={"VCPU": 1, "MEMORY_MB": 512})


def check_calls(sidecar, sample_name: str, **labels: str) -> float:
    """The sidecar's CheckDestination count `sample_name` with these labels, summed."""
    with urllib.request.urlopen(sidecar.metrics_url, timeout=10) as reply:
        text = reply.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == sample_name and sample.labels.get("rpc") == "CheckDestination"
               and all(sample.labels.get(name) == value for name, value in labels.items()))


def handled(sidecar, code: str) -> float:
    """CheckDestination calls the sidecar ended with `code` so far (each attempt counts)."""
    return check_calls(sidecar, "placecheck_grpc_server_handled_total", code=code)


@pytest.fixture
def no_fleet():
    """A sidecar without a fleet (UNAVAILABLE NO_SNAPSHOT with a RetryInfo of 100 ms) on one thread."""
    with start_sidecar(workers=1, wait_serving=False, extra_args=ONE_THREAD) as running:
        yield running


def test_the_default_deadline_ends_a_call_without_one(no_fleet):
    started_before = check_calls(no_fleet, "placecheck_grpc_server_started_total")
    with grpc.insecure_channel(no_fleet.decision_target) as channel:
        # Holds the one thread for the sidecar's longest wait (2 s): the next call queues.
        holding = placement_pb2_grpc.PlacementCheckStub(channel).CheckDestination.future(
            placement_pb2.CheckDestinationRequest(request=workload(), hosts=[HOST],
                                                  min_generation=UNREACHABLE_GENERATION), timeout=10)
        wait_for(lambda: check_calls(no_fleet, "placecheck_grpc_server_started_total") > started_before,
                 "the holding call on the thread", timeout=5)
        with PlacementClient(no_fleet.decision_target, channels=1, default_deadline_s=0.3, retry=NO_RETRIES) as client:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                client.check_destination(workload(), [HOST])
            elapsed = time.monotonic() - started
            assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert 0.25 <= elapsed < 1.0, elapsed
            assert not holding.done()
            # A call's own timeout wins: it outlasts the held thread and gets the sidecar's answer.
            with pytest.raises(grpc.RpcError) as raised:
                client.check_destination(workload(), [HOST], timeout=MAX_GENERATION_WAIT_S + 5)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert holding.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_retry_info_paces_grpcs_own_retries(no_fleet):
    # gRPC's own backoff would wait at most 10 ms, then 20 ms: the sidecar's RetryInfo asks for 100 ms.
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.01, max_backoff_s=0.02)
    before = handled(no_fleet, "UNAVAILABLE")
    with PlacementClient(no_fleet.decision_target, channels=1, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            client.check_destination(workload(), [HOST])
        elapsed = time.monotonic() - started
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert wait_for(lambda: handled(no_fleet, "UNAVAILABLE") - before >= 3, "3 attempts counted", timeout=5)
    assert handled(no_fleet, "UNAVAILABLE") - before == 3
    assert elapsed >= 2 * NO_SNAPSHOT_RETRY_DELAY_S * 0.9, elapsed


def test_without_retries_one_attempt_fails(no_fleet):
    before = handled(no_fleet, "UNAVAILABLE")
    with PlacementClient(no_fleet.decision_target, channels=1, retry=NO_RETRIES) as client:
        with pytest.raises(grpc.RpcError) as raised:
            client.check_destination(workload(), [HOST])
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    time.sleep(0.3)  # a retry, had there been one, would have come 100 ms later
    assert handled(no_fleet, "UNAVAILABLE") - before == 1


def test_watch_says_not_serving_then_returns_once_the_fleet_arrives(no_fleet):
    with pytest.raises(TimeoutError, match="NOT_SERVING"):
        wait_until_serving(no_fleet.decision_target, timeout=0.5)

    returned_at = []
    waiter = threading.Thread(target=lambda: returned_at.append(
        wait_until_serving(no_fleet.decision_target, timeout=20) or time.monotonic()))
    waiter.start()
    time.sleep(0.5)
    assert not returned_at, "SERVING before any fleet"
    with StateClient(no_fleet.state_target) as state:
        state.replace_fleet(one_host_fleet())
    written_at = time.monotonic()
    waiter.join(20)
    [returned] = returned_at
    assert 0 <= returned - written_at < 1.0  # the Watch's update, not a poll


def test_unavailable_is_retried_until_the_fleet_arrives(no_fleet):
    before = handled(no_fleet, "UNAVAILABLE")

    def write_after_first_refusal():
        wait_for(lambda: handled(no_fleet, "UNAVAILABLE") > before, "the first UNAVAILABLE", timeout=5)
        with StateClient(no_fleet.state_target) as state:
            state.replace_fleet(one_host_fleet())

    writer = threading.Thread(target=write_after_first_refusal)
    writer.start()
    try:
        # 5 attempts, 100 ms apart (RetryInfo): the fleet has 400 ms to arrive.
        with PlacementClient(no_fleet.decision_target, channels=1) as client:
            answer = client.check_destination(workload(), [HOST])
    finally:
        writer.join(10)
    assert answer.verdicts[0].allowed
    assert handled(no_fleet, "UNAVAILABLE") - before >= 1  # what the writer waited for


def test_resource_exhausted_is_retried_until_the_load_is_shed():
    with start_sidecar(workers=1, fleet={"hosts": [{"name": HOST, "resources": {
            "VCPU": {"total": 16}, "MEMORY_MB": {"total": 32768}}}]}, extra_args=ONE_THREAD) as sidecar, \
            grpc.insecure_channel(sidecar.decision_target) as flood_channel:
        flood = placement_pb2_grpc.PlacementCheckStub(flood_channel)
        unreachable = placement_pb2.CheckDestinationRequest(request=workload(), hosts=[HOST],
                                                            min_generation=UNREACHABLE_GENERATION)
        # The first call holds the one thread waiting for a generation that never comes until
        # shortly before its 0.6 s deadline; those queued behind it fill the admission limit and
        # the sidecar sheds the rest.
        calls = [flood.CheckDestination.future(unreachable, timeout=0.6)
                 for _ in range(CALLS_ADMITTED_PER_THREAD + 32)]
        wait_for(lambda: any(call.done() and call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for call in calls),
                 "the sidecar to shed load", timeout=5)
        with PlacementClient(sidecar.decision_target, channels=1, retry=NO_RETRIES) as once:
            with pytest.raises(grpc.RpcError) as raised:
                once.check_destination(workload(), [HOST])
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.4, max_backoff_s=2.0)
        with PlacementClient(sidecar.decision_target, channels=1, retry=policy) as client:
            assert client.check_destination(workload(), [HOST]).verdicts[0].allowed
        for call in calls:
            call.exception(timeout=10)  # ended, one way or another
        flood_shed = sum(call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for call in calls)
        # Shed: the flood's, the call without retries, and at least one attempt of the retried call.
        assert handled(sidecar, "RESOURCE_EXHAUSTED") - flood_shed - 1 >= 1


def test_worker_target_names_ip_addresses_of_one_family():
    assert worker_target(["127.0.0.1:50061", "127.0.0.1:50062"]) == "ipv4:127.0.0.1:50061,127.0.0.1:50062"
    assert worker_target(["[::1]:50061"]) == "ipv6:[::1]:50061"
    for wrong in (["localhost:50061"], ["127.0.0.1:50061", "[::1]:50062"], ["127.0.0.1"], []):
        with pytest.raises(ValueError):
            worker_target(wrong)
    with pytest.raises(ValueError, match="between 1 and 5"):
        RetryPolicy(max_attempts=6)  # gRPC's C core would cut it to 5 without a word
