"""Weighers: Nova's normalisation and weigher cases, and the top-k kernel against the
plain-Python reference."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.columns import build_columns
from engine.config import Profile
from engine.model import Fleet, Host, Inventory, Request
from engine.weighers import WEIGHERS, nova_normalize, plan_weighing, rank, reference_weigh, score

ONLY = {w.multiplier_option: 0.0 for w in WEIGHERS}  # every multiplier off; tests turn one on


def profile_with(**multipliers) -> Profile:
    return dataclasses.replace(Profile(), **{**ONLY, **multipliers})


def ram_host(name: str, free_ram_mb: int) -> Host:
    # Nova's fake host states give free_ram_mb directly; here it is total - used.
    return Host(name, resources={"MEMORY_MB": Inventory(total=max(free_ram_mb, 0) + 1024,
                                                        used=1024 - min(free_ram_mb, 0))})


def kernel_ranking(hosts, profile, request=Request(), passing=None, placed=None, k=None):
    """(host, weight) best first, from the kernel over every host (or the passing ones)."""
    columns = build_columns(Fleet(tuple(hosts)))
    fail_bits = np.array([0 if passing is None or ok else 1 for ok in (passing or [True] * len(hosts))],
                         dtype=np.uint64)
    placed_rows = None if placed is None else np.array(placed, dtype=np.int32)
    plan = plan_weighing(profile, request)
    ranking = rank(columns, plan, fail_bits, placed_rows, len(hosts) if k is None else k)
    return columns, plan, ranking, [(columns.host_name(int(row)), float(weight))
                                    for row, weight in zip(ranking.rows, ranking.weights)]


# nova/tests/unit/test_weights.py::test_normalization
@pytest.mark.parametrize("values, expected, minval, maxval", [
    ((), (), None, None),
    ((0.0, 0.0), (0.0, 0.0), None, None),
    ((1.0, 1.0), (0.0, 0.0), None, None),
    ((20.0, 50.0), (0.0, 1.0), None, None),
    ((20.0, 50.0), (0.0, 0.375), None, 100.0),
    ((20.0, 50.0), (0.4, 1.0), 0.0, None),
    ((20.0, 50.0), (0.2, 0.5), 0.0, 100.0),
])
def test_nova_normalization_cases(values, expected, minval, maxval):
    assert tuple(nova_normalize(values, minval, maxval)) == expected


RAM_HOSTS = [ram_host("host1", 512), ram_host("host2", 1024), ram_host("host3", 3072), ram_host("host4", 8192)]


@pytest.mark.parametrize("multiplier, best, weight", [(1.0, "host4", 1.0), (2.0, "host4", 2.0), (0.0, "host1", 0.0)])
def test_ram_weigher_as_nova(multiplier, best, weight):
    # nova/tests/unit/scheduler/weights/test_weights_ram.py
    _, _, _, ranked = kernel_ranking(RAM_HOSTS, profile_with(ram_weight_multiplier=multiplier))
    assert ranked[0] == (best, weight)


def test_ram_weigher_clamps_negative_free_ram_to_zero():
    hosts = RAM_HOSTS + [ram_host("negative", -512)]
    _, _, _, ranked = kernel_ranking(hosts, profile_with(ram_weight_multiplier=1.0))
    assert ranked[0] == ("host4", 1.0)
    assert ranked[-1] == ("negative", 0.0)
    # host1 normalises over [0, 8192], not over [-512, 8192]: minval = 0.
    assert dict(ranked)["host1"] == 512 / 8192


def test_cpu_weigher_as_nova():
    # test_weights_cpu.py: free vCPUs 0, 2, 6, 16 (8 x 2.0 ratio), and a host using more than it has.
    def cpu_host(name, used, total=8, ratio=2.0):
        return Host(name, resources={"VCPU": Inventory(total=total, allocation_ratio=ratio, used=used)})

    hosts = [cpu_host("host1", 16), cpu_host("host2", 14), cpu_host("host3", 10), cpu_host("host4", 0),
             cpu_host("negative", 6, total=4, ratio=1.0)]
    _, _, _, ranked = kernel_ranking(hosts, profile_with(cpu_weight_multiplier=1.0))
    assert ranked[0] == ("host4", 1.0)
    assert dict(ranked)["negative"] == 0.0


@pytest.mark.parametrize("multiplier, best, weight", [(-1.0, "host3", 0.0), (2.0, "host4", 2.0)])
def test_io_ops_weigher_as_nova(multiplier, best, weight):
    hosts = [Host(f"host{i}", num_io_ops=ops) for i, ops in enumerate([1, 2, 0, 4], start=1)]
    _, _, _, ranked = kernel_ranking(hosts, profile_with(io_ops_weight_multiplier=multiplier))
    assert ranked[0] == (best, weight)


@pytest.mark.parametrize("multiplier, expected", [
    (1.0, [("host4", 1.0), ("host2", 3 / 8), ("host3", 2 / 8), ("host1", 0.0)]),
    (-1.0, [("host1", 0.0), ("host3", -2 / 8), ("host2", -3 / 8), ("host4", -1.0)]),
])
def test_num_instances_weigher_normalises_over_min_and_max(multiplier, expected):
    # No minval: normalised over [2, 10], so the host with fewest instances is at 0.
    hosts = [Host(f"host{i}", num_instances=count) for i, count in enumerate([2, 5, 4, 10], start=1)]
    _, _, _, ranked = kernel_ranking(hosts, profile_with(num_instances_weight_multiplier=multiplier))
    assert ranked == expected


def test_equal_values_normalise_to_zero_and_ties_keep_fleet_order():
    hosts = [Host(f"host{i}", num_instances=3) for i in range(5)]
    _, _, _, ranked = kernel_ranking(hosts, profile_with(num_instances_weight_multiplier=1.0))
    assert ranked == [(f"host{i}", 0.0) for i in range(5)]


def test_a_lone_passing_host_is_unweighed():
    _, plan, ranking, ranked = kernel_ranking(RAM_HOSTS, profile_with(ram_weight_multiplier=1.0),
                                              passing=[False, False, True, False])
    assert ranked == [("host3", 0.0)]
    assert reference_weigh([RAM_HOSTS[2]], profile_with(ram_weight_multiplier=1.0), Request())[0].weight == 0.0


def test_placed_instances_are_consumed_before_weighing():
    # Two instances of 4096 MB already placed on host4 leave it 0 free: host3 becomes best.
    request = Request(resources={"MEMORY_MB": 4096})
    _, plan, ranking, ranked = kernel_ranking(RAM_HOSTS, profile_with(ram_weight_multiplier=1.0), request,
                                              placed=[0, 0, 0, 2])
    assert ranked[0] == ("host3", 1.0)
    assert ranked[-1] == ("host4", 0.0)


def test_score_reports_each_weigher():
    profile = profile_with(ram_weight_multiplier=2.0, io_ops_weight_multiplier=-1.0)
    hosts = [dataclasses.replace(host, num_io_ops=i) for i, host in enumerate(RAM_HOSTS)]
    columns, plan, ranking, _ = kernel_ranking(hosts, profile)
    best = score(columns, plan, ranking, 0, 0)
    by_name = {s.weigher: s for s in best.weighers}
    assert best.host == "host4"
    assert (by_name["RAMWeigher"].raw, by_name["RAMWeigher"].normalized, by_name["RAMWeigher"].multiplier) == \
        (8192.0, 1.0, 2.0)
    assert (by_name["IoOpsWeigher"].raw, by_name["IoOpsWeigher"].normalized) == (3.0, 1.0)
    assert best.weight == pytest.approx(sum(s.contribution for s in best.weighers))


# --- kernel == reference -------------------------------------------------------------------

MULTIPLIERS = st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 2.5])


@st.composite
def weighing_cases(draw, ratios):
    count = draw(st.integers(0, 12))
    hosts = []
    for index in range(count):
        resources = {}
        if draw(st.booleans()) or index == 0:
            resources["MEMORY_MB"] = Inventory(total=draw(st.sampled_from([0, 512, 2048, 8192])),
                                               used=draw(st.sampled_from([0, 256, 2048, 9000])))
        if draw(st.booleans()):
            resources["VCPU"] = Inventory(total=draw(st.integers(0, 16)), used=draw(st.integers(0, 40)),
                                          allocation_ratio=draw(st.sampled_from(ratios)))
        if draw(st.booleans()):
            resources["DISK_GB"] = Inventory(total=draw(st.sampled_from([0, 10, 100])),
                                             used=draw(st.integers(0, 120)))
        hosts.append(Host(f"h{index:02d}", resources=resources,
                          num_instances=draw(st.integers(0, 4)), num_io_ops=draw(st.integers(0, 4))))
    passing = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    placed = draw(st.lists(st.integers(0, 3), min_size=count, max_size=count))
    profile = dataclasses.replace(Profile(), **{w.multiplier_option: draw(MULTIPLIERS) for w in WEIGHERS})
    request = Request(resources={"MEMORY_MB": draw(st.sampled_from([0, 512, 4096])),
                                 "VCPU": draw(st.integers(0, 4)), "DISK_GB": draw(st.integers(0, 20))})
    k = draw(st.integers(1, count + 2))
    return hosts, passing, placed, profile, request, k


def _compare(case, exact_order: bool):
    hosts, passing, placed, profile, request, k = case
    columns, plan, ranking, ranked = kernel_ranking(hosts, profile, request, passing, placed, k)
    survivors = [host for host, ok in zip(hosts, passing) if ok]
    expected = reference_weigh(survivors, profile, request,
                               {host.name: count for host, count in zip(hosts, placed)})
    assert ranking.passing == len(survivors)
    assert len(ranked) == min(k, len(survivors))
    reference_weight = {weighed.host: weighed.weight for weighed in expected}
    for host, weight in ranked:
        assert weight == pytest.approx(reference_weight[host], abs=1e-9)
    if exact_order:
        assert [host for host, _ in ranked] == [weighed.host for weighed in expected[:k]]
    else:  # the best k, up to near-ties at the boundary
        assert all(a[1] >= b[1] for a, b in zip(ranked, ranked[1:]))
        if len(expected) > len(ranked) and ranked:
            assert ranked[-1][1] >= expected[len(ranked)].weight - 1e-9
    placed_on = {host.name: count for host, count in zip(hosts, placed)}
    reference_scores_of = {weighed.host: weighed.weighers for weighed in expected}
    if len(survivors) > 1:
        for position, (host, _) in enumerate(ranked):
            reported = score(columns, plan, ranking, position, placed_on[host])
            reference_scores = reference_scores_of[host]
            for mine, theirs in zip(reported.weighers, reference_scores):
                assert mine.weigher == theirs.weigher
                assert mine.raw == pytest.approx(theirs.raw, abs=1e-9)
                assert mine.normalized == pytest.approx(theirs.normalized, abs=1e-9)
                assert mine.multiplier == theirs.multiplier


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weighing_cases(ratios=[1.0, 1.5, 2.0, 4.0]))
def test_kernel_matches_reference_exactly_when_arithmetic_is_exact(case):
    _compare(case, exact_order=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(weighing_cases(ratios=[1.1, 1.3, 3.7, 16.0]))
def test_kernel_matches_reference_within_tolerance(case):
    _compare(case, exact_order=False)


def test_top_k_does_not_need_a_full_sort_to_be_right_at_scale():
    rng = np.random.default_rng(7)
    n = 20_000
    hosts = [Host(f"h{i:05d}", num_io_ops=int(ops), num_instances=int(count))
             for i, (ops, count) in enumerate(zip(rng.integers(0, 50, n), rng.integers(0, 30, n)))]
    profile = profile_with(io_ops_weight_multiplier=-1.0, num_instances_weight_multiplier=0.5)
    _, _, _, ranked = kernel_ranking(hosts, profile, k=25)
    expected = reference_weigh(hosts, profile, Request())[:25]
    assert ranked == [(weighed.host, pytest.approx(weighed.weight, abs=1e-12)) for weighed in expected]
