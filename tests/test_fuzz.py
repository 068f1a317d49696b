"""No caller can crash the sidecar or change its fleet through the decision API.

Against one real sidecar: hypothesis builds PlacementCheck requests from the whole message
space (odd strings, extreme numbers, unknown enum values, huge and nested queries, hosts that
are not there), and mutates valid request bodies byte by byte. Every answer must be a status a
caller can act on (never INTERNAL or UNKNOWN), every worker must live on, and the fleet must be
the one it was.
"""
from __future__ import annotations

import collections
import random

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placecheck import PlacementClient, StateClient
from placecheck.v1 import placement_pb2
from sidecar import start_sidecar

FUZZ_DEMO_HOSTS = 200
CALL_TIMEOUT_S = 10.0
GENERATED_CALLS = 1200
MUTATED_BODIES = 1500
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
CHECK = "/placecheck.v1.PlacementCheck/CheckDestination"
SELECT = "/placecheck.v1.PlacementCheck/SelectDestinations"

texts = st.one_of(st.sampled_from(["", "compute-00001", "VCPU", "MEMORY_MB", "az1", "nova", "<or>", "s== a",
                                   "x" * 5000, "\u00e9\u4e2d\U0001f600", "../../etc", "trait:CUSTOM_X"]),
                  st.text(max_size=40))
numbers = st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]),
                    st.integers(-(2**63), 2**63 - 1))


def mostly(good, odd):
    """Nine draws in ten from `good`: most calls get past validation into the rules and waits."""
    return st.integers(0, 9).flatmap(lambda draw: odd if draw == 9 else good)


hosts_ = mostly(st.sampled_from([f"compute-{index:05d}" for index in range(1, 6)]), texts)
classes = mostly(st.sampled_from(["VCPU", "MEMORY_MB", "DISK_GB", "CUSTOM_FPGA"]), texts)
amounts = mostly(st.integers(0, 4096), numbers)
zones = mostly(st.sampled_from(["", "az1", "az2", "nova"]), texts)
aggregate_ids = mostly(st.integers(1, 10), numbers)
traits = mostly(st.sampled_from(["HW_CPU_X86_AVX2", "CUSTOM_GOLD", "COMPUTE_STATUS_DISABLED"]), texts)
queries = st.one_of(texts, st.sampled_from([
    '["=", "$free_ram_mb", 1024]', '["and", ["<", "$num_instances", 5], true]', '["or"]', "[]", "{}", "null",
    '["in", "$host_ip", "10.0.0.5"]', '["unknown", 1]', "NaN", '["=", 1e400, 1]', '["not"' * 50 + "]" * 50,
    "[" * 5000 + "]" * 5000]))


@st.composite
def placement_requests(draw) -> placement_pb2.PlacementRequest:
    request = placement_pb2.PlacementRequest(
        operation=draw(mostly(st.just(0), st.sampled_from([1, 2, 3, 4, 5, 6, 7, -3, 99]))),
        resources=draw(st.dictionaries(classes, amounts, max_size=3)),
        required_traits=draw(st.lists(traits, max_size=2)),
        forbidden_traits=draw(st.lists(traits, max_size=2)),
        member_of=[placement_pb2.AggregateSet(aggregate_ids=ids)
                   for ids in draw(st.lists(st.lists(aggregate_ids, min_size=1, max_size=3), max_size=2))],
        availability_zone=draw(zones),
        flavor=placement_pb2.Flavor(name=draw(texts), extra_specs=draw(st.dictionaries(texts, texts, max_size=3))),
        project_id=draw(texts),
        instance_uuid=draw(mostly(st.just("00000000-0000-0000-0000-000000000001"), texts)),
        source_host=draw(hosts_),
        num_instances=draw(mostly(st.integers(0, 4), st.sampled_from([-1, 2**31 - 1]))),
        profile=draw(st.sampled_from(["", "default", "nope"])),
    )
    if draw(st.booleans()):
        request.image.CopyFrom(placement_pb2.Image(id=draw(texts), disk_format=draw(texts),
                                                   properties=draw(st.dictionaries(texts, texts, max_size=4))))
    if draw(st.booleans()):
        request.scheduler_hints.CopyFrom(placement_pb2.SchedulerHints(
            same_host=draw(st.lists(texts, max_size=2)), different_host=draw(st.lists(texts, max_size=2)),
            build_near_host_ip=draw(mostly(st.sampled_from(["", "10.0.0.1"]), texts)),
            cidr=draw(st.sampled_from(["", "/24", "/129", "24", draw(texts)])),
            query=draw(queries)))
    if draw(st.booleans()):
        group = placement_pb2.ServerGroup(policy=draw(st.sampled_from([0, 1, 2, 3, 4, 9])),
                                          members=draw(st.lists(texts, max_size=3)),
                                          hosts=draw(st.lists(texts, max_size=2)))
        if draw(st.booleans()):
            group.max_server_per_host = draw(st.sampled_from([0, 1, 2, -5, 2**31 - 1]))
        request.server_group.CopyFrom(group)
    return request


@pytest.fixture(scope="module")
def fuzzed():
    # Short generation waits: a call with min_generation ends long before its deadline even on a
    # loaded machine, so DEADLINE_EXCEEDED never stands for a stall.
    with start_sidecar(workers=2, demo_hosts=FUZZ_DEMO_HOSTS, metrics=False,
                       extra_args=("--max-generation-wait", "0.2")) as sidecar, \
            StateClient(sidecar.state_target) as state, \
            PlacementClient(sidecar.decision_target, channels=2) as placement:
        before = state.status(timeout=CALL_TIMEOUT_S)
        workers = sorted(sidecar.worker_pids())
        statuses: collections.Counter = collections.Counter()
        yield sidecar, placement, statuses
        after = state.status(timeout=CALL_TIMEOUT_S)
        assert (after.generation, after.host_count) == (before.generation, before.host_count)
        assert sorted(sidecar.worker_pids()) == workers, "a worker died"
        print(f"\nfuzz: {sum(statuses.values())} calls, statuses {dict(sorted(statuses.items()))}")


def record(statuses: collections.Counter, call) -> None:
    try:
        call()
        code = grpc.StatusCode.OK
    except grpc.RpcError as error:
        code = error.code()
    statuses[code.name] += 1
    assert code in ALLOWED, f"{code.name}"


@settings(max_examples=GENERATED_CALLS, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=placement_requests(), hosts=st.lists(hosts_, max_size=3), select=st.booleans(),
       min_generation=st.sampled_from([0, 0, 1, 2**64 - 1]))
def test_generated_requests_get_a_status_a_caller_can_act_on(fuzzed, request, hosts, select, min_generation):
    _, placement, statuses = fuzzed
    if select:
        record(statuses, lambda: placement.select_destinations(
            request, min_generation=min_generation, timeout=CALL_TIMEOUT_S))
    else:
        record(statuses, lambda: placement.check_destination(
            request, hosts or ["compute-00001"], min_generation=min_generation,
            timeout=CALL_TIMEOUT_S))


def mutated(body: bytes, rng: random.Random) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 8)):
        action = rng.random()
        position = rng.randrange(len(data) + 1)
        if action < 0.4 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif action < 0.7:
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        else:
            del data[position:position + rng.randint(1, 6)]
    return bytes(data)


def test_mutated_bodies_get_a_status_a_caller_can_act_on(fuzzed):
    sidecar, _, statuses = fuzzed
    rng = random.Random(20261202)
    valid = [
        (CHECK, placement_pb2.CheckDestinationRequest(
            request=placement_pb2.PlacementRequest(resources={"VCPU": 2, "MEMORY_MB": 2048}, required_traits=["X"],
                                                   scheduler_hints=placement_pb2.SchedulerHints(query='["=", 1, 1]')),
            hosts=["compute-00001", "compute-00002"]).SerializeToString()),
        (SELECT, placement_pb2.SelectDestinationsRequest(
            request=placement_pb2.PlacementRequest(resources={"VCPU": 1}, num_instances=2,
                                                   flavor=placement_pb2.Flavor(extra_specs={"a": "<or> b"}))
        ).SerializeToString()),
    ]
    undecodable = 0
    with grpc.insecure_channel(sidecar.decision_target) as channel:
        calls = {method: channel.unary_unary(method) for method, _ in valid}  # raw bytes both ways
        for index in range(MUTATED_BODIES):
            method, body = valid[index % len(valid)]
            try:
                calls[method](mutated(body, rng), timeout=CALL_TIMEOUT_S)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
                undecodable += "the body is not a valid" in (error.details() or "")
            statuses[code.name] += 1
            assert code in ALLOWED, f"{code.name} for a mutated {method} body"
    assert undecodable > 0, "no mutation made an undecodable body: the test did not reach that path"
    assert "Exception deserializing" not in sidecar.log()
