"""Every rule's compiled kernel against its plain-Python reference, on random fleets."""
from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placecheck_engine import _fastfilters, decide
from placecheck_engine.columns import Columns, build_columns, overlay, usage_delta
from placecheck_engine.config import Profile, default_config
from placecheck_engine.model import Fleet, Host, Inventory, Operation, Request, SchedulerHints
from placecheck_engine.rules import RULES, rule_names
from placecheck_engine.rules import move_source, resource
from fleetgen import INSTANCE_UUIDS, fleets, scenarios
from placecheck.v1 import placement_pb2

NUMBER_FIELDS = {field.name for field in placement_pb2.RejectionNumbers.DESCRIPTOR.fields}

BIT = 7  # a bit other than 0 so a kernel that ignores `bit` is caught
OTHER_BITS = np.uint64(0b101)  # set beforehand: a scan must only OR its own bit in
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def as_snapshot(columns: Columns) -> Columns:
    """The columns as a snapshot reader sees them: read-only arrays, dicts through JSON."""
    arrays = {}
    for name, array in columns.arrays.items():
        view = array.copy()
        view.flags.writeable = False
        arrays[name] = view
    return Columns.from_parts(arrays, json.loads(json.dumps(columns.dicts)))


def scan(rule, active, columns, start, stop, placed) -> tuple[np.ndarray, int]:
    fail_bits = np.full(columns.host_count, OTHER_BITS, dtype=np.uint64)
    refused = rule.scan(active, columns, fail_bits, BIT, start, stop, placed)
    assert (fail_bits & OTHER_BITS == OTHER_BITS).all()
    return fail_bits >> np.uint64(BIT) & np.uint64(1) == 1, refused


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.data())
def test_kernel_equals_reference_and_explains_every_refusal(scenario, data):
    fleet, request, profile = scenario
    columns = as_snapshot(build_columns(fleet))
    n = columns.host_count
    start = data.draw(st.integers(0, n), label="start")
    stop = data.draw(st.integers(start, n), label="stop")
    kernels, expected_bits = [], {placed: [0] * n for placed in (0, 1, 2)}
    for rule in RULES.values():
        for active in rule.compile(request, columns, profile):
            kernel = rule.kernel(active, columns) if active.params is not None else None
            kernels.append(kernel)
            for placed in (0, 1, 2):
                refused_rows, refused = scan(rule, active, columns, 0, n, placed)
                expected = [not rule.reference(active.name, host, fleet, request, profile, placed)
                            for host in fleet.hosts]
                if kernel is not None:  # its one-row predicate, as CheckDestination runs it
                    assert [kernel.refuses_row(row, placed) for row in range(n)] == expected, (active.name, placed)
                    for row in range(n):
                        expected_bits[placed][row] |= expected[row] << (len(kernels) - 1)
                assert refused_rows.tolist() == expected, (active.name, placed)
                assert refused == sum(expected)

                partial, partial_count = scan(rule, active, columns, start, stop, placed)
                assert partial[start:stop].tolist() == expected[start:stop]
                assert not partial[:start].any() and not partial[stop:].any()
                assert partial_count == sum(expected[start:stop])

                for row in range(n):
                    one, count = scan(rule, active, columns, row, row + 1, placed)
                    assert one.tolist() == [r == row and expected[row] for r in range(n)]
                    assert count == expected[row]
                    if expected[row]:
                        rejection = rule.explain(active, columns, row, placed)
                        assert rejection.rule == active.name
                        assert UPPER_SNAKE.match(rejection.reason)
                        assert rejection.message
                        assert set(rejection.numbers) <= NUMBER_FIELDS
    # Every kernel on one row in one call, as CheckDestination runs them (None: scanned in Python).
    for placed, bits in expected_bits.items():
        for first in range(0, len(kernels), 64):
            chunk = kernels[first:first + 64]
            assert [_fastfilters.refused_bits(chunk, row, placed) for row in range(n)] == \
                [bits_of_row >> first & ((1 << len(chunk)) - 1) for bits_of_row in bits]


@settings(max_examples=60, deadline=None)
@given(fleets(max_hosts=20))
def test_lookups(fleet):
    columns = as_snapshot(build_columns(fleet))
    assert columns.host_count == len(fleet.hosts)
    for row, host in enumerate(fleet.hosts):
        assert columns.row_of(host.name) == row
        assert columns.host_name(row) == host.name
        assert columns.instances_of(row) == list(host.instances)
        assert set(columns.traits_of(row)) == host.traits
        assert set(columns.aggregates_of(row)) == {agg.id for agg in fleet.aggregates_of(host.name)}
        for trait in host.traits:
            assert columns.has_trait(row, trait)
    assert columns.row_of("no such host") is None
    for uuid in {u for h in fleet.hosts for u in h.instances} | {"absent"}:
        expected = [row for row, host in enumerate(fleet.hosts) if uuid in host.instances]
        assert columns.rows_of_instances([uuid]).tolist() == expected
    for rc in {rc for h in fleet.hosts for rc in h.resources}:
        assert columns.dicts["resource_classes"][columns.resource_class_index(rc)] == rc
    assert columns.resource_class_index("CUSTOM_ABSENT") is None
    for agg in fleet.aggregates:
        assert columns.dicts["aggregates"][columns.aggregate_bit(agg.id)] == agg.id
    assert columns.aggregate_bit(10**6) is None


def test_rule_names_in_order():
    # Nova's request filters first, in its ALL_REQUEST_FILTERS order (map_az_to_placement_aggregate
    # is AvailabilityZone, beside MemberOf), then Placement's rules.
    request_filters = ["require_tenant_aggregate", "require_image_type_support", "compute_status_filter",
                       "isolate_aggregates", "transform_image_metadata", "accelerators_filter",
                       "packed_virtqueue_filter", "ephemeral_encryption_filter", "virtio_sound_filter",
                       "tpm_secret_security_filter"]
    assert rule_names()[:len(request_filters) + 1] == request_filters + ["resource"]
    assert set(rule_names()) >= {"RequiredTraits", "ForbiddenTraits", "MemberOf", "AvailabilityZone",
                                 "ComputeFilter", "ServerGroupAffinityFilter",
                                 "ServerGroupAntiAffinityFilter", "SameHostFilter",
                                 "DifferentHostFilter", "IoOpsFilter", "NumInstancesFilter",
                                 "MoveSource"}


def refusal(fleet, request, profile, rule_name, host_row=0, placed=0):
    columns = build_columns(fleet)
    rule = RULES[rule_name]
    [active] = [a for a in rule.compile(request, columns, profile)]
    refused, _ = scan(rule, active, columns, 0, columns.host_count, placed)
    return rule.explain(active, columns, host_row, placed) if refused[host_row] else None


def memory_host(**inventory) -> Fleet:
    return Fleet((Host("h0", resources={"MEMORY_MB": Inventory(**inventory)}),))


def test_resource_message_has_the_numbers():
    fleet = memory_host(total=65536, reserved=512, allocation_ratio=1.5, used=96880)
    rejection = refusal(fleet, Request(resources={"MEMORY_MB": 8192}), Profile(), "resource")
    assert rejection.reason == resource.INSUFFICIENT_CAPACITY
    assert rejection.message == ("MEMORY_MB: requested 8192, free 656 of capacity 97536 "
                                 "(65536-512 x 1.5), used 96880")
    assert rejection.numbers == {"requested": 8192, "free": 656, "capacity": 97536, "used": 96880,
                                 "total": 65536, "reserved": 512, "allocation_ratio": 1.5}


@pytest.mark.parametrize("inventory, amount, reason", [
    (dict(total=100, used=100), 1, resource.INSUFFICIENT_CAPACITY),
    (dict(total=100, used=99), 1, None),  # filling to exactly capacity is allowed
    (dict(total=100, min_unit=4), 2, resource.BELOW_MIN_UNIT),
    (dict(total=100, max_unit=8), 16, resource.ABOVE_MAX_UNIT),
    (dict(total=100, step_size=4), 6, resource.NOT_A_STEP_MULTIPLE),
])
def test_resource_reasons(inventory, amount, reason):
    rejection = refusal(memory_host(**inventory), Request(resources={"MEMORY_MB": amount}),
                        Profile(), "resource")
    assert (rejection and rejection.reason) == reason


def test_resource_without_inventory_and_placed_instances():
    fleet = Fleet((Host("h0", resources={"VCPU": Inventory(total=4)}),))
    rejection = refusal(fleet, Request(resources={"MEMORY_MB": 1}), Profile(), "resource")
    assert rejection.reason == resource.NO_INVENTORY
    request = Request(resources={"VCPU": 2})
    assert refusal(fleet, request, Profile(), "resource", placed=1) is None
    rejection = refusal(fleet, request, Profile(), "resource", placed=2)
    assert rejection.numbers["free"] == 0 and "after 2 placed" in rejection.message


@pytest.mark.parametrize("operation, allow_resize, source_trait, refused", [
    (Operation.LIVE_MIGRATE, True, True, True),
    (Operation.EVACUATE, False, False, True),
    (Operation.RESIZE, False, False, True),
    (Operation.RESIZE, True, False, False),
    (Operation.COLD_MIGRATE, True, False, True),
    (Operation.COLD_MIGRATE, False, True, False),
    (Operation.BOOT, False, False, False),
])
def test_move_source(operation, allow_resize, source_trait, refused):
    traits = frozenset({move_source.SAME_HOST_COLD_MIGRATE_TRAIT}) if source_trait else frozenset()
    fleet = Fleet((Host("src", traits=traits), Host("other")))
    request = Request(operation=operation, source_host="src" if operation.is_move else "")
    profile = Profile(allow_resize_to_same_host=allow_resize)
    rejection = refusal(fleet, request, profile, "MoveSource")
    assert bool(rejection) == refused
    if rejection:
        assert rejection.reason == move_source.DESTINATION_IS_SOURCE
        assert operation.value in rejection.message and "src" in rejection.message
    assert refusal(fleet, request, profile, "MoveSource", host_row=1) is None


def test_empty_fleet():
    columns = as_snapshot(build_columns(Fleet()))
    assert columns.host_count == 0 and columns.row_of("h0") is None
    assert columns.rows_of_instances(["x"]).tolist() == []
    request = Request(resources={"VCPU": 1}, required_traits=frozenset({"X"}), member_of=(frozenset({1}),),
                      availability_zone="az1")
    fail_bits = np.zeros(0, dtype=np.uint64)
    for rule in RULES.values():
        for active in rule.compile(request, columns, Profile()):
            assert rule.scan(active, columns, fail_bits, BIT, 0, 0, 0) == 0


@st.composite
def usage_changes(draw, fleet: Fleet) -> list[dict[int, Host]]:
    """Rounds of usage updates (each the new Host at some rows), as UpdateUsage makes them."""
    rounds = []
    hosts = list(fleet.hosts)
    for _ in range(draw(st.integers(1, 3))):
        changed = {}
        for row in draw(st.lists(st.integers(0, len(hosts) - 1), min_size=1, max_size=4, unique=True)):
            host = hosts[row]
            resources = {rc: dataclasses.replace(inventory, used=draw(st.integers(0, 2**20)))
                         for rc, inventory in host.resources.items()}
            host = dataclasses.replace(
                host, resources=resources, num_instances=draw(st.integers(0, 60)),
                num_io_ops=draw(st.integers(0, 12)),
                instances=tuple(draw(st.lists(st.sampled_from(INSTANCE_UUIDS), max_size=4))))
            hosts[row] = changed[row] = host
        rounds.append(changed)
    return rounds


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_hosts=10), st.data())
def test_a_base_with_usage_deltas_decides_as_a_full_build(scenario, data):
    """A generation published as deltas on a base (engine.columns.overlay, as every reader makes
    it) scans, explains and decides exactly as the columns built afresh from the same fleet, with
    what rules derived from the base beforehand (and kept for its overlays) in place."""
    fleet, request, profile = scenario
    base = as_snapshot(build_columns(fleet))
    names = [host.name for host in fleet.hosts]
    decide.check_destination(base, request, profile, names)
    decide.select_destinations(base, request, profile, "decision", 2)
    hosts, delta, instance_lists = list(fleet.hosts), None, {}
    for generation, changed in enumerate(data.draw(usage_changes(fleet), label="rounds"), start=2):
        for row, host in changed.items():
            if row in instance_lists or host.instances != fleet.hosts[row].instances:
                instance_lists[row] = host.instances
            hosts[row] = host
        delta = usage_delta(base, delta, generation, changed, instance_lists)
    overlaid = overlay(base, as_snapshot(delta))
    new_fleet = dataclasses.replace(fleet, hosts=tuple(hosts))
    fresh = as_snapshot(build_columns(new_fleet))
    n = fresh.host_count
    for rule in RULES.values():
        actives = rule.compile(request, overlaid, profile)
        assert [active.name for active in actives] == [active.name for active in rule.compile(request, fresh, profile)]
        for active, fresh_active in zip(actives, rule.compile(request, fresh, profile)):
            for placed in (0, 1):
                refused_rows, refused = scan(rule, active, overlaid, 0, n, placed)
                expected = [not rule.reference(active.name, host, new_fleet, request, profile, placed)
                            for host in new_fleet.hosts]
                assert refused_rows.tolist() == expected, (active.name, placed)
                assert scan(rule, fresh_active, fresh, 0, n, placed)[0].tolist() == expected
                for row in np.flatnonzero(refused_rows).tolist():
                    assert rule.explain(active, overlaid, row, placed) == rule.explain(fresh_active, fresh, row, placed)
    assert decide.check_destination(overlaid, request, profile, names) == \
        decide.check_destination(fresh, request, profile, names)
    assert decide.select_destinations(overlaid, request, profile, "decision", 2) == \
        decide.select_destinations(fresh, request, profile, "decision", 2)


def test_what_a_rule_derives_from_usage_is_not_kept_for_the_overlaid_generations():
    """JsonFilter's program loads the free RAM column: derived on the base, it must not be reused
    by a generation in which that column changed (tables derived from anything else are)."""
    memory = {"MEMORY_MB": Inventory(total=4096)}
    fleet = Fleet(hosts=(Host(name="a", resources=memory), Host(name="b", resources=memory)))
    request = Request(resources={"MEMORY_MB": 512},
                      scheduler_hints=SchedulerHints(query=json.dumps([">=", "$free_ram_mb", 1024])))
    profile = default_config().profile("")
    base = as_snapshot(build_columns(fleet))

    def refused(columns) -> list[list[str]]:
        return [[rejection.rule for rejection in verdict.rejections]
                for verdict in decide.check_destination(columns, request, profile, ["a", "b"]).verdicts]

    assert refused(base) == [[], []]
    busy = dataclasses.replace(fleet.hosts[0], resources={"MEMORY_MB": Inventory(total=4096, used=3500)})
    overlaid = overlay(base, as_snapshot(usage_delta(base, None, 2, {0: busy}, {})))
    assert refused(overlaid) == [["JsonFilter"], []]
    assert refused(base) == [[], []]
