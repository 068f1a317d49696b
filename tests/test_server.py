"""The sidecar over real gRPC: decisions, errors, health, reflection, metrics, processes."""
from __future__ import annotations

import glob
import multiprocessing
import os
import re
import signal
import threading
import time
import urllib.request
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

from placecheck_engine.columns import build_columns
from placecheck_engine.demo import demo_fleet
from placecheck_engine.snapshot import SnapshotWriter
from placecheck import PlacementClient, StateClient, bad_request_violations, wait_until_serving
from placecheck.v1 import fleet_pb2, placement_pb2, placement_pb2_grpc, state_pb2
from placecheck_server.worker import WorkerSettings, run as run_worker
from sidecar import free_port, start_sidecar, wait_for

TIMEOUT_S = 10.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def inventory(total: int, used: int = 0, **options) -> fleet_pb2.Inventory:
    return fleet_pb2.Inventory(total=total, used=used, **options)


def roomy_host(name: str, traits=("CUSTOM_FAST",)) -> fleet_pb2.Host:
    return fleet_pb2.Host(name=name, traits=traits, resources={
        "VCPU": inventory(64), "MEMORY_MB": inventory(262_144), "DISK_GB": inventory(4_000)})


def tight_host(name: str) -> fleet_pb2.Host:
    """Disabled, 1 GiB of 8 GiB memory free, no traits."""
    return fleet_pb2.Host(name=name, enabled=False, resources={
        "VCPU": inventory(16), "MEMORY_MB": inventory(8_192, used=7_168), "DISK_GB": inventory(500)})


def small_request(**fields) -> placement_pb2.PlacementRequest:
    fields.setdefault("resources", {"VCPU": 2, "MEMORY_MB": 4_096, "DISK_GB": 20})
    return placement_pb2.PlacementRequest(**fields)


@pytest.fixture(scope="module")
def placement(sidecar):
    with PlacementClient(sidecar.decision_target, channels=4) as client:
        yield client


@pytest.fixture(scope="module")
def state(sidecar):
    with StateClient(sidecar.state_target) as client:
        yield client


@pytest.fixture(scope="module")
def test_hosts(state):
    """Two known hosts added to the demo fleet; returns the generation that has them."""
    return state.upsert_hosts([roomy_host("test-roomy"), tight_host("test-tight")], timeout=TIMEOUT_S)


def rich_details(error: grpc.RpcError, message_type):
    details = []
    for detail in rpc_status.from_call(error).details:
        if detail.Is(message_type.DESCRIPTOR):
            unpacked = message_type()
            detail.Unpack(unpacked)
            details.append(unpacked)
    return details


# ---------------------------------------------------------------- decisions

def test_check_allows_a_host_that_fits_and_names_every_rule_refusing_one(placement, test_hosts):
    request = small_request(required_traits=["CUSTOM_FAST"])
    response = placement.check_destination(request, ["test-roomy", "test-tight"], min_generation=test_hosts,
                                           timeout=TIMEOUT_S)
    assert response.generation >= test_hosts
    assert re.fullmatch(r"[0-9a-f]{32}", response.decision_id)
    assert response.profile == "default" and response.config_revision
    roomy, tight = response.verdicts
    assert (roomy.host, roomy.allowed, list(roomy.rejections)) == ("test-roomy", True, [])
    assert tight.host == "test-tight" and not tight.allowed
    refusing = {rejection.rule: rejection for rejection in tight.rejections}
    assert set(refusing) == {"ComputeFilter", "resource:MEMORY_MB", "RequiredTraits"}
    assert set(refusing) <= set(tight.rules_evaluated)
    memory = refusing["resource:MEMORY_MB"]
    assert memory.reason and memory.message
    assert (memory.numbers.requested, memory.numbers.free, memory.numbers.capacity, memory.numbers.used) == \
        (4_096, 1_024, 8_192, 7_168)


def test_check_answers_for_each_host_in_request_order(placement, test_hosts):
    hosts = ["test-tight", "test-roomy", "test-tight"]
    response = placement.check_destination(small_request(), hosts, min_generation=test_hosts, timeout=TIMEOUT_S)
    assert [v.host for v in response.verdicts] == hosts
    assert [v.allowed for v in response.verdicts] == [False, True, False]


def test_select_ranks_hosts_with_alternates_and_replays_from_its_decision_id(placement):
    request = small_request(num_instances=2)
    response = placement.select_destinations(request, max_alternates=2, timeout=TIMEOUT_S)
    assert len(response.placements) == 2
    selected = [p.selected.host for p in response.placements]
    assert len(set(selected)) == 2
    for placement_ in response.placements:
        assert len(placement_.alternates) == 2
        assert not {a.host for a in placement_.alternates} & set(selected)
        weights = [placement_.selected.weight] + [a.weight for a in placement_.alternates]
        assert weights == sorted(weights, reverse=True)
        assert placement_.selected.weight == pytest.approx(sum(s.contribution for s in placement_.selected.weighers))
    summary = response.summary
    assert summary.hosts_evaluated >= 2_000 and 0 < summary.hosts_passed <= summary.hosts_evaluated
    assert (summary.instances_requested, summary.instances_placed) == (2, 2)

    replay = placement.select_destinations(request, max_alternates=2, decision_id=response.decision_id,
                                           timeout=TIMEOUT_S)
    assert replay.decision_id == response.decision_id
    assert list(replay.placements) == list(response.placements)


def test_select_when_nothing_fits_says_which_rules_eliminated_the_hosts(placement):
    response = placement.select_destinations(placement_pb2.PlacementRequest(resources={"VCPU": 1_000_000}),
                                             timeout=TIMEOUT_S)
    assert list(response.placements) == []
    summary = response.summary
    assert summary.hosts_passed == 0 and summary.instances_placed == 0
    eliminated = {e.rule: e.hosts for e in summary.eliminations}
    assert eliminated["resource:VCPU"] == summary.hosts_evaluated
    assert summary.message.startswith(f"0/{summary.hosts_evaluated} hosts fit: ")
    assert f"{summary.hosts_evaluated} resource:VCPU" in summary.message


# ---------------------------------------------------------------- errors

def _move(operation, **fields):
    return small_request(operation=operation, **fields)


INVALID_DECISIONS = [
    ("check", small_request(resources={"VCPU": -1}), ["h"], "request.resources[VCPU]", "must be from 0 to 2147483647"),
    # Placement's largest allocation: refused at the door rather than decided inexactly.
    ("check", small_request(resources={"MEMORY_MB": 2**31}), ["h"], "request.resources[MEMORY_MB]",
     "must be from 0 to 2147483647"),
    ("check", small_request(), [""], "hosts[0]", "must not be empty"),
    ("check", small_request(), [], "hosts", "at least one host is required"),
    ("check", _move(placement_pb2.OPERATION_LIVE_MIGRATE, instance_uuid="u"), ["h"], "request.source_host",
     "required for OPERATION_LIVE_MIGRATE"),
    ("check", _move(placement_pb2.OPERATION_EVACUATE, source_host="h"), ["h"], "request.instance_uuid",
     "required for OPERATION_EVACUATE"),
    ("check", small_request(operation=17), ["h"], "request.operation", "unknown value 17"),
    ("check", small_request(profile="nope"), ["h"], "request.profile", None),
    ("check", small_request(member_of=[placement_pb2.AggregateSet(aggregate_ids=[0])]), ["h"],
     "request.member_of[0].aggregate_ids[0]", "must be > 0"),
    ("check", small_request(scheduler_hints=placement_pb2.SchedulerHints(build_near_host_ip="not-an-ip")), ["h"],
     "request.scheduler_hints.build_near_host_ip", None),
    ("select", small_request(num_instances=-1), None, "request.num_instances", "must be >= 0"),
    ("select", small_request(num_instances=1001), None, "request.num_instances", "at most 1000 (--max-instances)"),
    ("check", small_request(), [f"h{index}" for index in range(1001)], "hosts", "at most 1000 hosts (--max-check-hosts)"),
    ("select", small_request(), -1, "max_alternates", "must be >= 0"),
]


@pytest.mark.parametrize("rpc, request_, extra, field, description", INVALID_DECISIONS,
                         ids=[case[3] for case in INVALID_DECISIONS])
def test_an_invalid_decision_request_names_its_field(placement, rpc, request_, extra, field, description):
    with pytest.raises(grpc.RpcError) as raised:
        if rpc == "check":
            placement.check_destination(request_, extra, timeout=TIMEOUT_S)
        else:
            placement.select_destinations(request_, max_alternates=extra, timeout=TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(violation_field, violation_description)] = bad_request_violations(raised.value)
    assert violation_field == field
    if description is not None:
        assert violation_description == description


INVALID_STATE_CHANGES = [
    ("upsert_hosts", [fleet_pb2.Host(name="x", resources={"VCPU": inventory(4, allocation_ratio=0)})],
     "hosts[0].resources[VCPU].allocation_ratio"),
    ("upsert_hosts", [fleet_pb2.Host(name="")], "hosts[0].name"),
    ("upsert_hosts", [fleet_pb2.Host(name="x", num_io_ops=-2)], "hosts[0].num_io_ops"),
    ("upsert_aggregates", [fleet_pb2.Aggregate(id=0)], "aggregates[0].id"),
    ("update_usage", [state_pb2.HostUsage(name="test-roomy", used={"VCPU": -1})], "usages[0].used[VCPU]"),
    ("update_usage", [state_pb2.HostUsage(name="test-roomy", used={"DISK_GB": 2**53 + 1})], "usages[0].used[DISK_GB]"),
    ("upsert_hosts", [fleet_pb2.Host(name="x", resources={"VCPU": inventory(2**31)})], "hosts[0].resources[VCPU].total"),
    ("upsert_hosts", [fleet_pb2.Host(name="x", resources={"VCPU": inventory(2**63 - 1)})],
     "hosts[0].resources[VCPU].total"),
    ("remove_hosts", [], "names"),
]


@pytest.mark.parametrize("method, argument, field", INVALID_STATE_CHANGES, ids=[c[2] for c in INVALID_STATE_CHANGES])
def test_an_invalid_state_change_names_its_field(state, test_hosts, method, argument, field):
    with pytest.raises(grpc.RpcError) as raised:
        getattr(state, method)(argument, timeout=TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in bad_request_violations(raised.value)] == [field]


def test_an_unknown_host_is_not_found_with_its_field(placement, test_hosts):
    with pytest.raises(grpc.RpcError) as raised:
        placement.check_destination(small_request(), ["test-roomy", "no-such-host"], timeout=TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    [info] = rich_details(raised.value, error_details_pb2.ErrorInfo)
    assert (info.reason, info.metadata["field"]) == ("HOST_NOT_FOUND", "hosts[1]")
    [resource] = rich_details(raised.value, error_details_pb2.ResourceInfo)
    assert (resource.resource_type, resource.resource_name) == ("host", "no-such-host")


def test_removing_an_unknown_host_or_aggregate_is_not_found(state):
    for call in (lambda: state.remove_hosts(["no-such-host"], timeout=TIMEOUT_S),
                 lambda: state.remove_aggregates([987_654], timeout=TIMEOUT_S)):
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_min_generation_waits_for_the_generation_within_the_deadline(placement, state, test_hosts):
    wanted = state.status(timeout=TIMEOUT_S).generation + 1
    answers = []
    waiter = threading.Thread(target=lambda: answers.append(placement.check_destination(
        small_request(), ["test-roomy"], min_generation=wanted, timeout=TIMEOUT_S)))
    waiter.start()
    time.sleep(0.3)
    assert not answers, "answered before the generation existed"
    published = state.upsert_hosts([roomy_host("test-roomy")], timeout=TIMEOUT_S)
    waiter.join(TIMEOUT_S)
    assert published == wanted and answers and answers[0].generation >= wanted


def test_min_generation_not_reached_by_the_deadline_is_failed_precondition(placement, state):
    current = state.status(timeout=TIMEOUT_S).generation
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        placement.select_destinations(small_request(), min_generation=current + 100, timeout=0.5)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # before the caller's own deadline
    assert 0.3 < time.monotonic() - started < 0.5
    [failure] = rich_details(raised.value, error_details_pb2.PreconditionFailure)
    assert failure.violations[0].type == "SNAPSHOT_STALE"


def test_a_flood_of_bad_requests_changes_nothing(sidecar, placement, state, test_hosts):
    before = state.status(timeout=TIMEOUT_S)
    workers_before = sidecar.worker_pids()
    verdict_before = placement.check_destination(small_request(), ["test-tight"], timeout=TIMEOUT_S).verdicts
    failures = 0
    for round_ in range(20):
        for rpc, request_, extra, _, _ in INVALID_DECISIONS:
            with pytest.raises(grpc.RpcError):
                if rpc == "check":
                    placement.check_destination(request_, extra, timeout=TIMEOUT_S)
                else:
                    placement.select_destinations(request_, max_alternates=extra, timeout=TIMEOUT_S)
            failures += 1
        for method, argument, _ in INVALID_STATE_CHANGES:
            with pytest.raises(grpc.RpcError):
                getattr(state, method)(argument, timeout=TIMEOUT_S)
            failures += 1
    after = state.status(timeout=TIMEOUT_S)
    assert failures == 20 * (len(INVALID_DECISIONS) + len(INVALID_STATE_CHANGES))
    assert (after.generation, after.host_count, after.aggregate_count, after.snapshot_bytes) == \
        (before.generation, before.host_count, before.aggregate_count, before.snapshot_bytes)
    assert sidecar.worker_pids() == workers_before
    assert placement.check_destination(small_request(), ["test-tight"], timeout=TIMEOUT_S).verdicts == verdict_before


# ---------------------------------------------------------------- epochs, readiness

def test_every_generation_comes_with_its_epoch_and_another_epoch_is_refused(placement, state, test_hosts):
    status = state.status(timeout=TIMEOUT_S)
    assert re.fullmatch(r"[0-9a-f]{16}", status.epoch) and test_hosts.epoch == status.epoch
    answer = placement.check_destination(small_request(), ["test-roomy"], min_generation=test_hosts,
                                         timeout=TIMEOUT_S)
    assert answer.epoch == status.epoch
    selected = placement.select_destinations(small_request(), min_generation=test_hosts, timeout=TIMEOUT_S)
    assert selected.epoch == status.epoch
    for call in (lambda: placement.check_destination(small_request(), ["test-roomy"], min_generation=1,
                                                     expected_epoch="0123456789abcdef", timeout=TIMEOUT_S),
                 lambda: placement.select_destinations(small_request(), min_generation=test_hosts,
                                                       expected_epoch="0123456789abcdef", timeout=TIMEOUT_S)):
        with pytest.raises(grpc.RpcError) as raised:
            call()
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        [failure] = rich_details(raised.value, error_details_pb2.PreconditionFailure)
        assert (failure.violations[0].type, failure.violations[0].subject) == ("EPOCH_MISMATCH", "expected_epoch")


def health_of(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="placecheck.v1.PlacementCheck"), timeout=TIMEOUT_S,
            wait_for_ready=True).status


def wait_for_health(target: str, wanted: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while health_of(target) != wanted:
        assert time.monotonic() < deadline, f"health never became {wanted}"
        time.sleep(0.05)


def test_without_a_fleet_the_sidecar_is_not_serving_until_one_is_written():
    with start_sidecar(workers=1, wait_serving=False) as bare, StateClient(bare.state_target) as state, \
            PlacementClient(bare.decision_target, channels=1) as placement:
        assert health_of(bare.decision_target) == NOT_SERVING
        samples = scrape(bare.metrics_url)
        assert samples["placecheck_ready"] == 0 and samples['placecheck_not_ready{reason="no_fleet"}'] == 1
        with pytest.raises(grpc.RpcError) as raised:
            placement.check_destination(small_request(), ["x"], timeout=TIMEOUT_S)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        status = state.status(timeout=TIMEOUT_S)
        assert (status.generation, status.host_count) == (0, 0) and status.epoch
        with pytest.raises(grpc.RpcError) as raised:
            state.replace_fleet(fleet_pb2.Fleet(), timeout=TIMEOUT_S)  # an empty fleet, not said so
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [field for field, _ in bad_request_violations(raised.value)] == ["fleet.hosts"]
        generation = state.replace_fleet(fleet_pb2.Fleet(hosts=[roomy_host("only")]), timeout=TIMEOUT_S)
        assert (generation, generation.epoch) == (1, status.epoch)
        wait_until_serving(bare.decision_target, timeout=TIMEOUT_S)
        assert placement.check_destination(small_request(), ["only"], min_generation=generation,
                                           timeout=TIMEOUT_S).verdicts[0].allowed
        samples = scrape(bare.metrics_url)
        assert samples["placecheck_ready"] == 1 and samples['placecheck_not_ready{reason="no_fleet"}'] == 0
        assert state.replace_fleet(fleet_pb2.Fleet(), allow_empty=True, timeout=TIMEOUT_S) == 2
        assert state.status(timeout=TIMEOUT_S).host_count == 0


def test_a_fleet_streamed_in_parts_replaces_the_fleet_as_one_generation():
    hosts = [roomy_host(f"streamed-{index:03d}") for index in range(25)]
    aggregate = fleet_pb2.Aggregate(id=3, name="az", hosts=["streamed-000", "streamed-024"],
                                    metadata={"availability_zone": "az9"})
    with start_sidecar(workers=1, metrics=False, wait_serving=False) as own, StateClient(own.state_target) as state, \
            PlacementClient(own.decision_target, channels=1) as placement:
        stub = state._stub
        bad_part = [state_pb2.ReplaceFleetPart(hosts=hosts[:2]), state_pb2.ReplaceFleetPart(hosts=[fleet_pb2.Host()])]
        for parts, field in ((bad_part, "parts[1].hosts[0].name"), ([state_pb2.ReplaceFleetPart()], "parts.hosts")):
            with pytest.raises(grpc.RpcError) as raised:
                stub.ReplaceFleetStream(iter(parts), timeout=TIMEOUT_S)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [f for f, _ in bad_request_violations(raised.value)] == [field]
        assert state.status(timeout=TIMEOUT_S).generation == 0  # nothing of a refused stream was kept
        generation = state.replace_fleet_stream(fleet_pb2.Fleet(hosts=hosts, aggregates=[aggregate]),
                                                hosts_per_part=10, timeout=TIMEOUT_S)
        assert generation == 1
        status = state.status(timeout=TIMEOUT_S)
        assert (status.host_count, status.aggregate_count, status.epoch) == (25, 1, generation.epoch)
        zoned = placement.check_destination(small_request(availability_zone="az9"),
                                            ["streamed-000", "streamed-012", "streamed-024"],
                                            min_generation=generation, timeout=TIMEOUT_S)
        assert [verdict.allowed for verdict in zoned.verdicts] == [True, False, True]


def test_with_max_snapshot_age_a_fleet_without_writes_turns_not_serving(tmp_path):
    max_age_s = 3.0
    with start_sidecar(workers=1, wait_serving=False, extra_args=("--max-snapshot-age", str(max_age_s))) as fed, \
            StateClient(fed.state_target) as state:
        written = time.monotonic()
        state.replace_fleet(fleet_pb2.Fleet(hosts=[roomy_host("only")]), timeout=TIMEOUT_S)
        wait_until_serving(fed.decision_target, timeout=TIMEOUT_S)
        wait_for_health(fed.decision_target, NOT_SERVING)
        assert time.monotonic() - written >= max_age_s
        samples = scrape(fed.metrics_url)
        assert samples['placecheck_not_ready{reason="stale"}'] == 1 and samples["placecheck_ready"] == 0
        assert samples["placecheck_snapshot_age_seconds"] > max_age_s
        state.update_usage([state_pb2.HostUsage(name="only", num_instances=1)], timeout=TIMEOUT_S)
        wait_for_health(fed.decision_target, SERVING)
        assert scrape(fed.metrics_url)["placecheck_ready"] == 1


# ---------------------------------------------------------------- health, reflection, metrics, processes

def test_health_reports_serving_for_the_server_and_the_decision_service(sidecar):
    with grpc.insecure_channel(sidecar.decision_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "placecheck.v1.PlacementCheck"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
            assert reply.status == SERVING


def test_reflection_lists_the_services(sidecar):
    with grpc.insecure_channel(sidecar.decision_target) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"placecheck.v1.PlacementCheck", "grpc.health.v1.Health"} <= services
    with grpc.insecure_channel(sidecar.state_target) as channel:
        assert "placecheck.v1.FleetState" in ProtoReflectionDescriptorDatabase(channel).get_services()


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_sum_decisions_across_workers(sidecar, state, test_hosts):
    calls = 40
    before = scrape(sidecar.metrics_url)
    # Many channels, so SO_REUSEPORT spreads the connections over both workers.
    with PlacementClient(sidecar.decision_target, channels=16) as spread:
        for _ in range(calls):
            spread.check_destination(small_request(), ["test-tight"], min_generation=test_hosts, timeout=TIMEOUT_S)
    decided = 'placecheck_decisions_total{outcome="refused",rpc="CheckDestination"}'
    # A call is counted just after its response is sent (AfterResponseExecutor).
    after = wait_for(lambda: (s := scrape(sidecar.metrics_url)).get(decided, 0.0) - before.get(decided, 0.0) >= calls
                     and s, "the calls counted")

    def delta(sample: str) -> float:
        return after.get(sample, 0.0) - before.get(sample, 0.0)

    assert delta('placecheck_decisions_total{outcome="refused",rpc="CheckDestination"}') == calls
    assert delta('placecheck_check_refusals_total{rule="ComputeFilter"}') == calls
    assert delta('placecheck_check_refusals_total{rule="resource:MEMORY_MB"}') == calls
    assert not any(name.startswith("placecheck_select_eliminations_total") and delta(name) for name in after)
    assert delta('placecheck_request_duration_seconds_count{rpc="CheckDestination"}') == calls
    status = state.status(timeout=TIMEOUT_S)
    assert after["placecheck_snapshot_generation"] == status.generation
    assert after["placecheck_snapshot_hosts"] == status.host_count
    assert 0 <= after["placecheck_snapshot_age_seconds"] < 3600
    # Each worker writes its own counter file: both of them answered.
    files = {os.path.basename(p) for p in glob.glob(str(sidecar.tmpdir / "placecheck-metrics-*" / "counter_*.db"))}
    assert {f"counter_{pid}.db" for pid in sidecar.worker_pids()} <= files


def test_a_killed_worker_is_restarted(sidecar, placement):
    workers = sidecar.worker_pids()
    assert len(workers) == 2
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        now = sidecar.worker_pids()
        if len(now) == 2 and workers[0] not in now:
            break
        assert time.monotonic() < deadline, f"workers {now} after killing {workers[0]}"
        time.sleep(0.1)
    wait_until_serving(sidecar.decision_target, timeout=30)
    with PlacementClient(sidecar.decision_target, channels=8) as spread:
        for _ in range(16):
            assert spread.select_destinations(small_request(), timeout=TIMEOUT_S).placements
    assert "exited with -9; restarting" in sidecar.log()


def test_sigterm_drains_in_flight_calls_turns_not_serving_and_cleans_up():
    with start_sidecar(workers=1, demo_hosts=100, metrics=False) as own:
        prefix = f"placecheck-{own.pid}"
        assert glob.glob(f"/dev/shm/{prefix}.*")
        socket_path = own.state_target.removeprefix("unix:")
        assert os.path.exists(socket_path)
        with grpc.insecure_channel(own.decision_target) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""),
                                                              timeout=TIMEOUT_S)
            assert next(watch).status == SERVING
            in_flight = placement_pb2_grpc.PlacementCheckStub(channel).CheckDestination.future(
                placement_pb2.CheckDestinationRequest(request=small_request(), hosts=["x"], min_generation=99),
                timeout=3.0)
            time.sleep(0.5)  # the call reaches the worker before the signal, even on a loaded machine
            os.kill(own.pid, signal.SIGTERM)
            assert next(watch).status == NOT_SERVING
            # Drained, not cut off: the call ends with its own answer at its deadline.
            assert in_flight.exception(TIMEOUT_S).code() == grpc.StatusCode.FAILED_PRECONDITION
            watch.cancel()
        assert own.stop() == 0
        assert not glob.glob(f"/dev/shm/{prefix}.*")
        assert not os.path.exists(socket_path)
        assert not glob.glob(str(own.tmpdir / "placecheck-metrics-*"))


def test_a_worker_is_not_serving_and_unavailable_until_the_first_snapshot(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # inherited by the spawned worker
    target = f"127.0.0.1:{free_port()}"
    with SnapshotWriter(f"placecheck-test-{uuid.uuid4().hex[:8]}") as writer:
        settings = WorkerSettings(index=0, listen=target, snapshot_prefix=writer.prefix, config_path=None,
                                  threads=4, grace_s=1.0, log_level="warning")
        worker = multiprocessing.get_context("spawn").Process(target=run_worker, args=(settings,))
        worker.start()
        try:
            with grpc.insecure_channel(target) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                reply = health.Check(health_pb2.HealthCheckRequest(service="placecheck.v1.PlacementCheck"),
                                     timeout=TIMEOUT_S, wait_for_ready=True)
                assert reply.status == NOT_SERVING
                with pytest.raises(grpc.RpcError) as raised:
                    placement_pb2_grpc.PlacementCheckStub(channel).CheckDestination(
                        placement_pb2.CheckDestinationRequest(request=small_request(), hosts=["x"]),
                        timeout=TIMEOUT_S)
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
                writer.publish(build_columns(demo_fleet(20, 1)))
                wait_until_serving(target, timeout=TIMEOUT_S, service="placecheck.v1.PlacementCheck")
        finally:
            worker.terminate()
            worker.join(TIMEOUT_S)
        assert worker.exitcode == 0


def test_a_second_sidecar_on_a_taken_decision_port_refuses_to_start(sidecar):
    with pytest.raises(RuntimeError, match="cannot listen on 127.0.0.1"):
        start_sidecar(workers=1, demo_hosts=10, metrics=False, extra_args=("--listen", sidecar.decision_target))


# ---------------------------------------------------------------- the server's pieces, without a process

def test_a_stale_state_socket_is_removed_and_a_live_one_refused(tmp_path):
    import socket

    from placecheck_server.supervisor import StartupError, remove_stale_socket

    path = str(tmp_path / "state.sock")
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(path)  # closed without unlinking: nobody listens
    assert remove_stale_socket(f"unix:{path}") == path and not os.path.exists(path)
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(path)
        live.listen()
        with pytest.raises(StartupError, match="in use"):
            remove_stale_socket(f"unix:{path}")


def test_fleets_and_requests_survive_the_round_trip_through_proto():
    from placecheck_engine.fleetfile import request_from_json
    from placecheck_server import convert

    fleet = demo_fleet(50, 3)
    assert convert.fleet_from_proto(convert.fleet_to_proto(fleet)) == fleet
    request = request_from_json({
        "operation": "resize", "source_host": "h1", "instance_uuid": "u1", "resources": {"VCPU": 2},
        "required_traits": ["A"], "forbidden_traits": ["B"], "member_of": [[1, 2]], "availability_zone": "az1",
        "flavor": {"name": "m1", "extra_specs": {"trait:C": "required"}}, "image": {"id": "i", "properties": {}},
        "scheduler_hints": {"same_host": ["u2"], "build_near_host_ip": "10.0.0.1", "cidr": "/16"},
        "server_group": {"policy": "anti-affinity", "members": ["u3"], "hosts": ["h2"],
                         "rules": {"max_server_per_host": 2}},
        "num_instances": 3, "profile": "p"})
    assert convert.request_from_proto(convert.request_to_proto(request)) == request


def test_an_unexpected_error_is_internal_with_its_traceback_logged_not_sent(caplog):
    from placecheck_server.errors import rpc_status_for

    try:
        raise RuntimeError("secret detail")
    except RuntimeError as error:
        outcome, status = rpc_status_for(error)
    assert (outcome, status.code) == ("internal", grpc.StatusCode.INTERNAL)
    assert "secret detail" not in status.details
    assert "Traceback" in caplog.text and "secret detail" in caplog.text


def test_an_empty_name_among_many_is_named_by_its_index():
    from placecheck_engine.model import InvalidField
    from placecheck_server import convert

    with pytest.raises(InvalidField) as raised:
        convert.request_from_proto(small_request(required_traits=["A", "", "B", ""]))
    assert (raised.value.field, raised.value.description) == ("request.required_traits[1]", "must not be empty")
    assert convert.request_from_proto(small_request(required_traits=["A", "B"])).required_traits == {"A", "B"}


def test_a_select_response_keeps_every_placement_alternate_and_score_in_order():
    from placecheck_engine.verdict import FilterSummary, InstancePlacement, SelectResult, WeighedHost, WeigherScore
    from placecheck_server import convert

    def weighed(host: str, weight: float) -> WeighedHost:
        return WeighedHost(host, weight, (WeigherScore("RAMWeigher", 10.0, 0.5, 1.0),
                                          WeigherScore("CPUWeigher", 2.0, 0.25, 2.0)))

    result = SelectResult(
        (InstancePlacement(weighed("a", 1.0), (weighed("c", 0.9), weighed("d", 0.8))),
         InstancePlacement(weighed("b", 0.95), (weighed("c", 0.9), weighed("d", 0.8)))),
        FilterSummary(10, 4, (("ComputeFilter", 6), ("RequiredTraits", 0)), 2, 2), "default")
    response = convert.select_response(result, generation=7, decision_id="id", config_revision="rev")
    assert [(p.selected.host, [a.host for a in p.alternates]) for p in response.placements] == \
        [("a", ["c", "d"]), ("b", ["c", "d"])]
    first = response.placements[0].selected
    assert first.weight == 1.0
    assert [(s.weigher, s.raw, s.normalized, s.multiplier, s.contribution) for s in first.weighers] == \
        [("RAMWeigher", 10.0, 0.5, 1.0, 0.5), ("CPUWeigher", 2.0, 0.25, 2.0, 0.5)]
    assert [(e.rule, e.hosts) for e in response.summary.eliminations] == [("ComputeFilter", 6), ("RequiredTraits", 0)]
    assert response.summary.message == "4/10 hosts fit: 6 ComputeFilter"
    assert (response.generation, response.decision_id, response.profile, response.config_revision) == \
        (7, "id", "default", "rev")


def test_decision_metrics_count_every_update_on_bound_children(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    from placecheck_server.metrics import DecisionMetrics

    metrics = DecisionMetrics()
    for _ in range(3):
        metrics.record("CheckDestination", "refused", 0.0002, {"ComputeFilter": 1, "RequiredTraits": 0})
    metrics.record("CheckDestination", "allowed", 0.002, {})
    metrics.record("SelectDestinations", "placed", 0.004, {"ComputeFilter": 40})

    def value(metric, *labels):  # this process's value (the supervisor sums every worker's file)
        return metric.labels(*labels)._value.get()

    assert value(metrics.decisions, "CheckDestination", "refused") == 3
    assert value(metrics.decisions, "CheckDestination", "allowed") == 1
    assert value(metrics.check_refusals, "ComputeFilter") == 3
    assert value(metrics.check_refusals, "RequiredTraits") == 0
    assert value(metrics.select_eliminations, "ComputeFilter") == 40
    assert metrics.duration.labels("CheckDestination")._sum.get() == pytest.approx(0.0026)


def test_a_huge_unknown_host_name_is_not_found_not_an_oversized_trailer(placement, test_hosts):
    name = "h" * 4096  # echoed whole, three times, it would pass grpcio's 16 KiB metadata limit
    with pytest.raises(grpc.RpcError) as raised:
        placement.check_destination(small_request(), [name], timeout=TIMEOUT_S)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    [resource] = rich_details(raised.value, error_details_pb2.ResourceInfo)
    assert resource.resource_name.startswith("h" * 512) and resource.resource_name.endswith("(4096 characters)")
