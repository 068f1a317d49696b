"""The decision path: CheckDestination's every-reason verdicts and SelectDestinations'
ranking, alternates, multi-instance consumption, all-or-nothing, replay and summary."""
from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from placecheck_engine.columns import build_columns
from placecheck_engine.config import ConfigError, Profile, default_config, load_config
from placecheck_engine.decide import UnknownHost, check_destination, select_destinations
from placecheck_engine.model import Fleet, GroupPolicy, Host, Image, InvalidField, Inventory, Request, ServerGroup
from placecheck_engine.rules import RULES
from placecheck_engine.weighers import MetricNotFound
from tests.fleetgen import scenarios

PROFILE = default_config().profile("")


def host(name, ram_free=8192, vcpus=16, enabled=True, num_io_ops=0, ram_total=16384, **fields) -> Host:
    return Host(name, enabled=enabled, num_io_ops=num_io_ops, resources={
        "MEMORY_MB": Inventory(total=ram_total, used=ram_total - ram_free),
        "VCPU": Inventory(total=vcpus),
        "DISK_GB": Inventory(total=100)}, **fields)


def columns_of(*hosts):
    return build_columns(Fleet(tuple(hosts)))


SMALL = Request(resources={"MEMORY_MB": 1024, "VCPU": 1, "DISK_GB": 1})


def selected_hosts(result):
    return [placement.selected.host for placement in result.placements]


# --- CheckDestination ------------------------------------------------------------------------

def test_check_lists_every_refusing_rule_with_numbers():
    columns = columns_of(host("busy", ram_free=512, enabled=False, num_io_ops=9), host("fine"))
    profile = dataclasses.replace(PROFILE, enabled_filters=("resource", "ComputeFilter", "IoOpsFilter"))
    result = check_destination(columns, SMALL, profile, ["busy", "fine"])
    busy, fine = result.verdicts
    assert [r.rule for r in busy.rejections] == ["resource:MEMORY_MB", "ComputeFilter", "IoOpsFilter"]
    memory = busy.rejections[0]
    assert memory.numbers["requested"] == 1024 and memory.numbers["free"] == 512
    assert busy.rejections[2].numbers == {"actual": 9, "limit": 8}
    assert not busy.allowed and fine.allowed and fine.rejections == ()
    # Every active rule, in the profile's order, whether it refused or not.
    assert busy.rules_evaluated == fine.rules_evaluated
    assert busy.rules_evaluated[:3] == ("resource:DISK_GB", "resource:MEMORY_MB", "resource:VCPU")
    assert "ComputeFilter" in busy.rules_evaluated and result.profile == profile.name


def test_check_keeps_request_order_and_repeats():
    columns = columns_of(host("a"), host("b", ram_free=0))
    verdicts = check_destination(columns, SMALL, PROFILE, ["b", "a", "b"]).verdicts
    assert [(v.host, v.allowed) for v in verdicts] == [("b", False), ("a", True), ("b", False)]


def test_check_unknown_host_is_an_error():
    with pytest.raises(UnknownHost) as raised:
        check_destination(columns_of(host("a")), SMALL, PROFILE, ["a", "nope"])
    assert raised.value.host == "nope"


# --- SelectDestinations: ranking and alternates ----------------------------------------------

RANKED = [host(f"h{i}", ram_free=free) for i, free in enumerate([2048, 8192, 4096, 6144, 1024])]
RAM_ONLY = dataclasses.replace(PROFILE, cpu_weight_multiplier=0.0, disk_weight_multiplier=0.0,
                               io_ops_weight_multiplier=0.0)


def test_select_takes_the_best_host_and_the_next_best_as_alternates():
    result = select_destinations(columns_of(*RANKED), SMALL, RAM_ONLY, "d1", None)
    (placement,) = result.placements
    assert placement.selected.host == "h1"
    assert placement.selected.weight == 1.0
    # max_attempts 3 -> 2 alternates, best first.
    assert [alt.host for alt in placement.alternates] == ["h3", "h2"]
    ram = next(s for s in placement.selected.weighers if s.weigher == "RAMWeigher")
    assert (ram.raw, ram.normalized, ram.multiplier) == (8192.0, 1.0, 1.0)


@pytest.mark.parametrize("max_alternates, expected", [(0, []), (10, ["h3", "h2", "h0", "h4"])])
def test_max_alternates_bounds_the_alternates(max_alternates, expected):
    result = select_destinations(columns_of(*RANKED), SMALL, RAM_ONLY, "d1", max_alternates)
    assert [alt.host for alt in result.placements[0].alternates] == expected


def test_several_instances_consume_their_host_and_reweigh():
    # 4096 MB each: h1 (8192 free) first; then h3 (6144) is best; then h1 and h2 tie at 4096
    # and h1 comes first in the fleet. h0 (2048) and h4 never fit, h3 no longer does.
    request = dataclasses.replace(SMALL, resources={"MEMORY_MB": 4096}, num_instances=3)
    result = select_destinations(columns_of(*RANKED), request, RAM_ONLY, "d1", None)
    assert selected_hosts(result) == ["h1", "h3", "h1"]
    # Weights after consumption are normalised over the consumed values.
    assert result.placements[1].selected.weight == 1.0
    first_ram = next(s for s in result.placements[2].selected.weighers if s.weigher == "RAMWeigher")
    assert first_ram.raw == 4096.0
    # Alternates: hosts that still fit and were chosen for no instance, the same for every instance.
    alternates = [[alt.host for alt in p.alternates] for p in result.placements]
    assert alternates == [["h2"]] * 3
    assert result.summary.instances_placed == 3 and result.summary.instances_requested == 3


def test_all_or_nothing_when_fewer_hosts_fit_than_instances():
    # Room for one 4096 MB instance on each of two hosts, three requested.
    fleet = columns_of(host("a", ram_free=4096), host("b", ram_free=5000), host("c", ram_free=1000))
    request = dataclasses.replace(SMALL, resources={"MEMORY_MB": 4096}, num_instances=3)
    result = select_destinations(fleet, request, PROFILE, "d1", None)
    assert result.placements == ()
    assert (result.summary.hosts_passed, result.summary.instances_placed) == (2, 0)
    assert result.summary.eliminations[0] == ("resource:MEMORY_MB", 1)


def test_anti_affinity_spreads_instances():
    group = ServerGroup(GroupPolicy.ANTI_AFFINITY, members=("i1", "i2", "i3"))
    request = dataclasses.replace(SMALL, num_instances=3, server_group=group, instance_uuid="i1")
    result = select_destinations(columns_of(*RANKED), request, RAM_ONLY, "d1", None)
    assert selected_hosts(result) == ["h1", "h3", "h2"]
    too_many = dataclasses.replace(request, num_instances=6)
    assert select_destinations(columns_of(*RANKED), too_many, RAM_ONLY, "d1", None).placements == ()


def test_affinity_keeps_later_instances_on_the_first_pick():
    group = ServerGroup(GroupPolicy.AFFINITY, members=("i1", "i2", "i3"))
    request = dataclasses.replace(SMALL, num_instances=3, server_group=group)
    result = select_destinations(columns_of(*RANKED), request, RAM_ONLY, "d1", None)
    assert selected_hosts(result) == ["h1", "h1", "h1"]
    # When the first host cannot take them all, nothing is placed (Nova would not move on).
    crowded = dataclasses.replace(request, resources={"MEMORY_MB": 4096})
    assert select_destinations(columns_of(*RANKED), crowded, RAM_ONLY, "d1", None).placements == ()


def test_no_host_fits_summarises_eliminations_most_first():
    fleet = columns_of(host("a", ram_free=0), host("b", ram_free=0, enabled=False), host("c", enabled=False))
    result = select_destinations(fleet, SMALL, PROFILE, "d1", None)
    assert result.placements == ()
    summary = result.summary
    assert summary.eliminations[:2] == (("resource:MEMORY_MB", 2), ("ComputeFilter", 2))
    assert summary.message == "0/3 hosts fit: 2 resource:MEMORY_MB, 2 ComputeFilter"


def test_soft_anti_affinity_weigher_spreads_the_instances_of_one_request():
    # Equal hosts: without the weigher every instance would go to the first; each pick is a
    # new member of the group on its host, so the next instance prefers another host.
    group = ServerGroup(GroupPolicy.SOFT_ANTI_AFFINITY, members=("i1", "i2", "i3"))
    request = dataclasses.replace(SMALL, num_instances=3, server_group=group)
    equal = [host(f"h{i}", ram_total=1 << 30, ram_free=1 << 30) for i in range(3)]
    profile = dataclasses.replace(RAM_ONLY, ram_weight_multiplier=0.0)
    assert selected_hosts(select_destinations(columns_of(*equal), request, profile, "d1", None)) == ["h0", "h1", "h2"]
    off = dataclasses.replace(profile, soft_anti_affinity_weight_multiplier=0.0)
    assert selected_hosts(select_destinations(columns_of(*equal), request, off, "d1", None)) == ["h0"] * 3


def test_a_required_metric_no_weighed_host_reports_fails_the_request():
    # Without MetricsFilter, which would have refused b before weighing.
    profile = dataclasses.replace(RAM_ONLY, metrics_weight_setting=("cpu.percent=1",),
                                  enabled_filters=("resource", "ComputeFilter"))
    fleet = columns_of(host("a", metrics={"cpu.percent": 3.0}), host("b"))
    with pytest.raises(MetricNotFound) as raised:
        select_destinations(fleet, SMALL, profile, "d1", None)
    assert (raised.value.host, raised.value.metric, raised.value.field) == ("b", "cpu.percent", "request.profile")
    lenient = dataclasses.replace(profile, metrics_required=False)
    assert selected_hosts(select_destinations(fleet, SMALL, lenient, "d1", None)) == ["a"]


# --- randomness: host_subset_size, shuffle_best_same_weighed_hosts and replay -----------------

def test_shuffle_spreads_picks_over_hosts_tied_at_the_top_only():
    # Five hosts tie at the best weight, one is behind: with host_subset_size 1 Nova's shuffle
    # makes any of the five the choice, never the sixth, and the alternates start with the
    # other tied hosts.
    fleet = columns_of(*(host(f"t{i}", ram_free=8192) for i in range(5)), host("low", ram_free=1024))
    profile = dataclasses.replace(RAM_ONLY, shuffle_best_same_weighed_hosts=True)
    results = [select_destinations(fleet, SMALL, profile, f"id-{i}", 5) for i in range(40)]
    picks = {selected_hosts(result)[0] for result in results}
    assert picks == {f"t{i}" for i in range(5)}
    for result in results:
        (placement,) = result.placements
        assert sorted(alt.host for alt in placement.alternates[:4]) == sorted(picks - {placement.selected.host})
        assert placement.alternates[4].host == "low"
    unshuffled = {selected_hosts(select_destinations(fleet, SMALL, RAM_ONLY, f"id-{i}", None))[0] for i in range(10)}
    assert unshuffled == {"t0"}


def test_same_decision_id_replays_and_subset_varies_across_ids():
    fleet = columns_of(*(host(f"h{i:02d}", ram_free=8000 + i) for i in range(20)))
    profile = dataclasses.replace(RAM_ONLY, host_subset_size=5)
    request = dataclasses.replace(SMALL, num_instances=2)
    first = select_destinations(fleet, request, profile, "replay-me", None)
    assert select_destinations(fleet, request, profile, "replay-me", None) == first
    picks = {selected_hosts(select_destinations(fleet, request, profile, f"id-{i}", None))[0]
             for i in range(30)}
    # Only the best five can be chosen, and more than one of them is.
    assert picks <= {"h19", "h18", "h17", "h16", "h15"} and len(picks) > 1


def test_subset_size_one_is_deterministic_across_ids():
    fleet = columns_of(*RANKED)
    picks = {selected_hosts(select_destinations(fleet, SMALL, RAM_ONLY, f"id-{i}", None))[0]
             for i in range(10)}
    assert picks == {"h1"}


# --- summary == per-rule refusals -------------------------------------------------------------

@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_summary_counts_equal_each_rules_refusals(scenario):
    fleet, request, profile = scenario
    columns = build_columns(fleet)
    names = [h.name for h in fleet.hosts]
    verdicts = check_destination(columns, request, profile, names).verdicts
    refusals = Counter(rejection.rule for verdict in verdicts for rejection in verdict.rejections)
    result = select_destinations(columns, request, profile, "summary", None)
    summary = result.summary
    assert summary.hosts_evaluated == len(names)
    assert summary.hosts_passed == sum(verdict.allowed for verdict in verdicts)
    assert dict(summary.eliminations) == {rule: refusals[rule] for rule in verdicts[0].rules_evaluated}
    counts = [count for _, count in summary.eliminations]
    assert counts == sorted(counts, reverse=True)
    allowed = {verdict.host for verdict in verdicts if verdict.allowed}
    if result.placements:
        assert selected_hosts(result)[0] in allowed
        assert all(alt.host in allowed for alt in result.placements[0].alternates)
    elif max(request.num_instances, 1) == 1:
        assert not allowed


# --- configuration ----------------------------------------------------------------------------

ETC_CONFIG = Path(__file__).resolve().parents[1] / "etc" / "placecheck.toml"


def test_documented_config_loads_and_profiles_resolve():
    config = load_config(ETC_CONFIG)
    assert config.profile("") is config.profile("default")
    assert config.profile("pack").ram_weight_multiplier == -1.0
    assert config.profile("pack").max_io_ops_per_host == 8  # Nova's default where left out
    assert set(config.profile("default").enabled_filters) == set(RULES)
    with pytest.raises(InvalidField) as raised:
        config.profile("missing")
    assert raised.value.field == "request.profile"


@pytest.mark.parametrize("body, key", [
    ('[profiles.default]\nram_weight_multipler = 1.0\n', "profiles.default.ram_weight_multipler"),
    ('[profiles.default]\nenabled_filters = ["RamFilter"]\n', "profiles.default.enabled_filters"),
    ('[profiles.default]\nhost_subset_size = 0\n', "profiles.default.host_subset_size"),
    ('[profiles.default]\nmax_attempts = "3"\n', "profiles.default.max_attempts"),
    ('default_profile = "other"\n[profiles.default]\n', "default_profile"),
    ('[profiles.default]\nram_weight_multiplier = \n', ""),
    ('[profiles.default]\nram_weight_multiplier = nan\n', "profiles.default.ram_weight_multiplier"),
    ('[profiles.default]\ncpu_weight_multiplier = -inf\n', "profiles.default.cpu_weight_multiplier"),
    ('[profiles.default]\nimage_properties_default_architecture = "AMD64"\n',
     "profiles.default.image_properties_default_architecture"),
])
def test_config_errors_name_file_and_key(tmp_path, body, key):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert (raised.value.source, raised.value.key) == (str(path), key)


def test_revision_follows_content(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[profiles.default]\nmax_attempts = 3\n")
    first = load_config(path).revision
    path.write_text("[profiles.default]\nmax_attempts = 4\n")
    assert load_config(path).revision != first and len(first) == 12


def test_profile_from_options_keeps_unknown_options_aside():
    profile = Profile.from_options("case-1", {"max_io_ops_per_host": 2, "isolated_hosts": ["a"],
                                              "a_future_weight_multiplier": 3.0})
    assert (profile.max_io_ops_per_host, profile.isolated_hosts) == (2, ("a",))
    assert profile.extra == {"a_future_weight_multiplier": 3.0}
    assert profile.enabled_filters == tuple(RULES)
    with pytest.raises(ConfigError):
        Profile.from_options("case-2", {"max_io_ops_per_host": "eight"})


def test_an_image_nova_cannot_type_is_refused_whatever_rules_run():
    columns = build_columns(Fleet((Host("h1"),)))
    request = Request(image=Image(properties={"hw_qemu_guest_agent": "yes", "hw_cpu_cores": "four"}))
    with pytest.raises(InvalidField) as raised:
        check_destination(columns, request, Profile(enabled_filters=("ComputeFilter",)), ["h1"])
    assert raised.value.field == "request.image.properties[hw_cpu_cores]"
