"""The kernel's specialised paths against the plain-Python references: JsonFilter's block
evaluation across block boundaries, and the bitset rules on both sides of their one-word
fast path (more than 64 traits or aggregates, several member_of sets)."""
from __future__ import annotations

import dataclasses
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placecheck_engine.columns import build_columns
from placecheck_engine.config import Profile
from placecheck_engine.model import Aggregate, Fleet
from placecheck_engine.rules import RULES
from fleetgen import scenarios
from test_json_filter import RULE as JSON_RULE
from test_json_filter import queries, reference_passes, request_with
from test_rules_kernel import as_snapshot, scan

BLOCK_ROWS = 256  # json_filter.pxi's JSON_BLOCK_ROWS
BITSET_RULES = ("RequiredTraits", "ForbiddenTraits", "MemberOf", "AvailabilityZone")
PADDING = 70  # traits and aggregates beyond one 64-bit word


def tiled(fleet: Fleet, hosts: int) -> Fleet:
    """The fleet's hosts repeated (renamed, without instances) to `hosts` rows."""
    copies = tuple(dataclasses.replace(fleet.hosts[index % len(fleet.hosts)], name=f"tile-{index:05d}",
                                       instances=())
                   for index in range(hosts))
    return Fleet(copies, ())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_hosts=7), queries, st.integers(2 * BLOCK_ROWS + 1, 3 * BLOCK_ROWS + 3), st.data())
def test_json_blocks_equal_reference(scenario, query, hosts, data):
    fleet = tiled(scenario[0], hosts)
    request = request_with(query, MEMORY_MB=data.draw(st.integers(0, 64)), DISK_GB=1, VCPU=1)
    columns = as_snapshot(build_columns(fleet))
    try:
        [active] = JSON_RULE.compile(request, columns, Profile())
    except Exception:  # queries compile refuses are test_json_filter's business
        return
    start = data.draw(st.integers(0, BLOCK_ROWS + 5), label="start")
    stop = data.draw(st.integers(start, hosts), label="stop")
    for placed in (0, 3):
        expected = [not passes for passes in reference_passes(fleet, request, placed)]
        refused, count = scan(JSON_RULE, active, columns, 0, hosts, placed)
        assert refused.tolist() == expected and count == sum(expected), (query, placed)
        partial, partial_count = scan(JSON_RULE, active, columns, start, stop, placed)
        assert partial.tolist() == [start <= row < stop and expected[row] for row in range(hosts)]
        assert partial_count == sum(expected[start:stop])


def widened(fleet: Fleet, seed: int) -> Fleet:
    """The fleet with PADDING more traits and PADDING more zone-less aggregates, so both
    bitsets take two words."""
    rng = random.Random(seed)
    hosts = tuple(dataclasses.replace(host, traits=host.traits | {f"CUSTOM_PAD_{index}" for index in range(PADDING)
                                                                  if row == 0 or rng.random() < 0.5})
                  for row, host in enumerate(fleet.hosts))
    names = [host.name for host in hosts]
    padding = tuple(Aggregate(1000 + index, f"pad{index}", frozenset(name for name in names if rng.random() < 0.3), {})
                    for index in range(PADDING))
    return Fleet(hosts, fleet.aggregates + padding)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 2**32), st.data())
def test_bitset_rules_equal_reference_beyond_one_word(scenario, seed, data):
    fleet, request, profile = scenario
    fleet = widened(fleet, seed)
    rng = random.Random(seed)
    padded_aggregates = [1000 + index for index in range(PADDING)]
    request = dataclasses.replace(
        request,
        required_traits=request.required_traits | {f"CUSTOM_PAD_{rng.randrange(PADDING)}"},
        member_of=request.member_of + tuple(frozenset(rng.sample(padded_aggregates, 3))
                                            for _ in range(data.draw(st.integers(0, 2)))))
    columns = as_snapshot(build_columns(fleet))
    assert columns.arrays["traits"].shape[1] > 1 and columns.arrays["aggregates"].shape[1] > 1
    n = columns.host_count
    for name in BITSET_RULES:
        rule = RULES[name]
        for active in rule.compile(request, columns, profile):
            expected = [not rule.reference(active.name, host, fleet, request, profile, 0) for host in fleet.hosts]
            refused, count = scan(rule, active, columns, 0, n, 0)
            assert refused.tolist() == expected and count == sum(expected), active.name
