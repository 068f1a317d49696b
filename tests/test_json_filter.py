"""JsonFilter: the compiled query against Nova's code path (the reference), Nova's own unit
tests (nova/tests/unit/scheduler/filters/test_json_filters.py), and the queries refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from placecheck_engine.columns import build_columns
from placecheck_engine.config import Profile
from placecheck_engine.model import Fleet, Host, InvalidField, Inventory, Request, SchedulerHints
from placecheck_engine.rules.json_filter import QUERY_FIELD, QUERY_IS_FALSE, JsonFilter, compile_query
from fleetgen import HOST_IPS, HYPERVISORS, STATS, fleets
from test_rules_kernel import as_snapshot, scan

RULE = JsonFilter()


def request_with(query, **resources) -> Request:
    text = query if isinstance(query, str) else json.dumps(query)
    return Request(resources=resources, scheduler_hints=SchedulerHints(query=text))


def kernel_passes(fleet: Fleet, request: Request, placed: int = 0) -> list[bool]:
    columns = as_snapshot(build_columns(fleet))
    [active] = RULE.compile(request, columns, Profile())
    refused, count = scan(RULE, active, columns, 0, columns.host_count, placed)
    assert count == refused.sum()
    return (~refused).tolist()


def reference_passes(fleet: Fleet, request: Request, placed: int = 0) -> list[bool]:
    return [RULE.reference(RULE.name, host, fleet, request, Profile(), placed) for host in fleet.hosts]


def both(fleet: Fleet, query) -> list[bool]:
    request = request_with(query)
    kernel = kernel_passes(fleet, request)
    assert kernel == reference_passes(fleet, request)
    return kernel


def host_with(free_ram_mb=0, disk_gb=0, stats=None, **fields) -> Host:
    return Host("h", resources={"MEMORY_MB": Inventory(total=free_ram_mb),
                                "DISK_GB": Inventory(total=disk_gb)},
                stats=stats or {}, **fields)


# --- Nova's unit tests ----------------------------------------------------------------

BASE_QUERY = ["and", [">=", "$free_ram_mb", 1024], [">=", "$free_disk_mb", 200 * 1024]]


@pytest.mark.parametrize("free_ram_mb, disk_gb, passes", [
    (1024, 200, True),
    (1023, 200, False),  # fails on memory
    (1024, 199, False),  # fails on disk (whole GB here: free_disk_mb is (total - used) * 1024)
])
def test_nova_base_query(free_ram_mb, disk_gb, passes):
    assert both(Fleet((host_with(free_ram_mb, disk_gb),)), BASE_QUERY) == [passes]


def test_nova_no_query_passes():
    fleet = Fleet((host_with(),))
    assert both(fleet, "") == [True]
    [active] = RULE.compile(request_with(""), build_columns(fleet), Profile())
    assert active.params is None


def test_nova_service_disabled_quirk():
    # Nova's host had no `service`: `not` of no arguments is [], and all() of it is falsy.
    query = BASE_QUERY + [["not", "$no_such_attribute.disabled"]]
    assert both(Fleet((host_with(1024, 200),)), query) == [False]


# Nova's capabilities dict is placecheck's stats (strings: "" is its falsy value).
HAPPY_DAY = ["and", "$stats.enabled", ["=", "$stats.opt1", "match"],
             ["or", ["and", ["<", "$free_ram_mb", 30], ["<", "$free_disk_mb", 300 * 1024]],
              ["and", [">", "$free_ram_mb", 30], [">", "$free_disk_mb", 300 * 1024]]]]


@pytest.mark.parametrize("free_ram_mb, disk_gb, stats, passes", [
    (10, 200, {"opt1": "match"}, True),
    (40, 400, {"opt1": "match"}, True),
    (40, 400, {"enabled": "", "opt1": "match"}, False),  # capabilities disabled
    (30, 300, {"enabled": "yes", "opt1": "match"}, False),  # exactly the excluded amounts
    (20, 400, {"enabled": "yes", "opt1": "match"}, False),  # memory lower, disk higher
    (20, 400, {"enabled": "yes", "opt1": "no-match"}, False),
])
def test_nova_happy_day(free_ram_mb, disk_gb, stats, passes):
    assert both(Fleet((host_with(free_ram_mb, disk_gb, stats),)), HAPPY_DAY) == [passes]


@pytest.mark.parametrize("query, passes", [
    (["=", 1, 1], True), (["=", 1, 2], False),
    (["<", 1, 2], True), (["<", 1, 1], False), (["<", 2, 1], False),
    ([">", 2, 1], True), ([">", 2, 2], False), ([">", 2, 3], False),
    (["<=", 1, 2], True), (["<=", 1, 1], True), (["<=", 2, 1], False),
    ([">=", 2, 1], True), ([">=", 2, 2], True), ([">=", 2, 3], False),
    (["in", 1, 1], True), (["in", 1, 1, 2, 3], True), (["in", 4, 1, 2, 3], False),
    (["not", True], False), (["not", False], True),
    (["or", True, False], True), (["or", False, False], False),
    (["and", True, True], True), (["and", False, False], False), (["and", True, False], False),
    (["and", ["or", True, False], [">", 2, 1]], True),
    (["not", True, False, True, False], True),  # [False, True, False, True]: any passes
    (["not", True, True, True], False),
    ([], True), ({}, True),  # empty queries pass
    ([">", ["and", ["or", ["not", ["<", [">=", ["<=", ["in"]]]]]]]], False),
    ([">", 1], False),
    (["=", "$........", 1, 1], True), (["=", "$foo", 2, 2], True),  # unknown variables dropped
])
def test_nova_operators(query, passes):
    assert both(Fleet((host_with(),)), query) == [passes]


def test_nova_unknown_operator_is_refused():
    with pytest.raises(InvalidField) as refused:
        RULE.compile(request_with(["!=", 1, 2]), build_columns(Fleet((host_with(),))), Profile())
    assert refused.value.field == QUERY_FIELD and "'!='" in refused.value.description
    with pytest.raises(KeyError):
        reference_passes(Fleet((host_with(),)), request_with(["!=", 1, 2]))


# --- more of Nova's quirks, on real variables ----------------------------------------

def fleet_of_three() -> Fleet:
    return Fleet((
        Host("a", resources={"MEMORY_MB": Inventory(total=2048), "VCPU": Inventory(total=16, used=3)},
             host_ip="10.0.0.5", hypervisor_type="QEMU", hypervisor_version=6002000,
             stats={"cpu_vendor": "Intel", "flag": ""}, num_io_ops=1),
        Host("b", resources={"MEMORY_MB": Inventory(total=512, used=100)}, host_ip="10.0.1.5",
             hypervisor_type="Xen", num_io_ops=7, num_instances=3),
        Host("c", num_io_ops=2, failed_builds=2),
    ))


@pytest.mark.parametrize("query, passes", [
    (["or", ["in", "$host_ip", "10.0.0.5", "10.0.1.5"], [">", "$num_io_ops", 5]], [True, True, False]),
    (["and", [">=", "$vcpus_total", 8], ["not", ["=", "$hypervisor_type", "Xen"]]], [True, False, False]),
    # A missing hypervisor_type is dropped: `=` has one argument left, so is False.
    (["not", ["=", "$hypervisor_type", "Xen"]], [True, False, True]),
    (["<", "$hypervisor_type", "R"], [True, False, False]),  # strings order by code point
    (["<", "$hypervisor_version", 7000000], [True, False, False]),
    (["=", "$stats", {"cpu_vendor": "Intel", "flag": ""}], [True, False, False]),
    (["or", "$stats"], [True, False, False]),  # {} is falsy
    (["or", "$stats.flag"], [False, False, False]),  # "" is falsy, absent is dropped
    (["=", "$hypervisor_type", 5], [False, False, False]),  # equality across types is False
    (["<", ["not", 1, 0], ["not", 0]], [True, True, True]),  # [False, True] < [True]
    (["=", "$free_ram_mb", 412], [False, True, False]),
    ([">", "$failed_builds", 1], [False, False, True]),
    ('">="', [False, False, False]),  # a JSON string query: ">" with the argument "="
])
def test_quirks_on_variables(query, passes):
    assert both(fleet_of_three(), query) == passes


def test_placed_instances_consume_like_nova():
    # consume_from_request: free_ram_mb -= memory, num_instances += 1, num_io_ops += 1, ...
    fleet = fleet_of_three()
    request = request_with(["and", [">=", "$free_ram_mb", 1000], ["<", "$num_io_ops", 3]], MEMORY_MB=512)
    assert kernel_passes(fleet, request, 0) == reference_passes(fleet, request, 0) == [True, False, False]
    assert kernel_passes(fleet, request, 2) == reference_passes(fleet, request, 2) == [False, False, False]
    assert kernel_passes(fleet, request, 1) == reference_passes(fleet, request, 1) == [True, False, False]


def test_explanation_shows_the_query_and_what_it_read():
    fleet = fleet_of_three()
    request = request_with(["and", [">=", "$free_ram_mb", 1024], ["=", "$hypervisor_type", "QEMU"]])
    columns = build_columns(fleet)
    [active] = RULE.compile(request, columns, Profile())
    rejection = RULE.explain(active, columns, 1, 0)
    assert rejection.reason == QUERY_IS_FALSE and rejection.rule == "JsonFilter"
    assert request.scheduler_hints.query in rejection.message
    assert "$free_ram_mb = 412" in rejection.message and "$hypervisor_type = 'Xen'" in rejection.message
    assert "$hypervisor_type = None" in RULE.explain(active, columns, 2, 0).message


@pytest.mark.parametrize("query, words", [
    (["<", "$hypervisor_type", 5], "TypeError"),
    (["<", "$stats.cpu_vendor", 1], "TypeError"),
    ([">=", "$stats", "$stats"], "TypeError"),
    (["<", ["not", 1], 1], "TypeError"),
    # The string could be first once the absent version is dropped: "x" < 1 raises.
    (["<", "$hypervisor_version", "x", 1], "TypeError"),
    (["<", "$free_ram_mb.x", 1], "AttributeError"),
    (["=", "$stats.cpu_vendor.x", 1], "AttributeError"),
    (["=", "$metrics", 1], "does not model"),
    (["not", "$service.disabled"], "does not model"),
    (["and", ["or", ["nope", 1]]], "unknown operator"),
    ([["="], 1], "unknown operator"),
    (5, "not int"),
    ({"a": 1}, "not dict"),
    ("[\"=\", NaN, 1]", "NaN"),
    (["=", 2 ** 60 + 1, 1], "2**53"),
    ("[\"=\", 1", "not JSON"),
])
def test_refused_queries(query, words):
    with pytest.raises(InvalidField) as refused:
        RULE.compile(request_with(query), build_columns(fleet_of_three()), Profile())
    assert refused.value.field == QUERY_FIELD and words in refused.value.description


@pytest.mark.parametrize("query", [
    ["<", 5, "$hypervisor_version"],  # both numbers
    ["<", "$num_io_ops", "$hypervisor_version"],
    ["=", "$stats", 1],  # equality never raises
    ["in", "$host_ip", 5, {"a": [1]}],
    ["<", "$host_ip", "$hypervisor_type", "$stats.cpu_vendor"],
])
def test_accepted_queries_agree(query):
    both(fleet_of_three(), query)


# --- kernel == reference on random fleets and random queries --------------------------

VARIABLES = ("$free_ram_mb", "$total_usable_ram_mb", "$free_disk_mb", "$total_usable_disk_gb",
             "$disk_mb_used", "$vcpus_total", "$vcpus_used", "$num_instances", "$num_io_ops",
             "$failed_builds", "$host_ip", "$hypervisor_type", "$hypervisor_version", "$stats",
             "$stats.cpu_vendor", "$stats.hardware_profile", "$stats.absent", "$no_such", "$")
STRINGS = tuple(ip for ip in HOST_IPS if ip) + tuple(hv for hv, _ in HYPERVISORS if hv) + \
    sum(STATS.values(), ()) + ("QEMU ", "zzz", "$", "10.0.0.7")
numbers = st.one_of(st.integers(-5, 70000), st.sampled_from((0, 1, 2, 4, 6002000, 1024, 1.5, -0.5)),
                    st.booleans())
constants = st.one_of(numbers, st.sampled_from(STRINGS), st.none(), st.just(""),
                      st.sampled_from(({}, {"cpu_vendor": "Intel"}, {"a": [1]})), st.just([]))
leaves = st.one_of(st.sampled_from(VARIABLES), constants)
OPERATORS = ("=", "<", ">", "in", "<=", ">=", "not", "or", "and")


def operations(arguments):
    operator = st.sampled_from(OPERATORS * 4 + ("!=",))  # now and then an operator Nova lacks
    return st.tuples(operator, st.lists(arguments, max_size=4)).map(lambda node: [node[0], *node[1]])


queries = operations(st.recursive(leaves, operations, max_leaves=10))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(max_hosts=8), queries, st.data())
def test_kernel_equals_reference_on_random_queries(fleet, query, data):
    request = request_with(query, MEMORY_MB=data.draw(st.integers(0, 64)),
                           DISK_GB=data.draw(st.integers(0, 8)), VCPU=data.draw(st.integers(0, 4)))
    columns = as_snapshot(build_columns(fleet))
    try:
        [active] = RULE.compile(request, columns, Profile())
    except InvalidField as refused:
        event("refused")
        assert refused.field == QUERY_FIELD
        return
    event("accepted")
    n = columns.host_count
    start = data.draw(st.integers(0, n), label="start")
    stop = data.draw(st.integers(start, n), label="stop")
    for placed in (0, 2):
        # A query compile accepts never makes Nova raise, on any host.
        expected = reference_passes(fleet, request, placed)
        refused, count = scan(RULE, active, columns, 0, n, placed)
        assert (~refused).tolist() == expected, (query, placed)
        partial, partial_count = scan(RULE, active, columns, start, stop, placed)
        assert partial.tolist() == [start <= row < stop and not expected[row] for row in range(n)]
        assert partial_count == partial.sum()
        for row in np.flatnonzero(refused):
            assert RULE.explain(active, columns, int(row), placed).reason == QUERY_IS_FALSE


@pytest.mark.parametrize("query, why", [
    ("[\"and\", " * 3000 + "true" + "]" * 3000, "not JSON"),
    ("[\"not\", " * 101 + "true" + "]" * 101, "nested deeper than 100"),
    ("[\"in\", \"$hypervisor_type\"" + ", \"x\"" * 20000 + "]", "at most 65536"),
])
def test_a_query_too_deep_or_too_long_is_refused_with_its_field(query, why):
    with pytest.raises(InvalidField) as raised:
        compile_query(query)
    assert raised.value.field == "request.scheduler_hints.query" and why in raised.value.description
