"""ComputeCapabilitiesFilter, ImagePropertiesFilter, IsolatedHostsFilter, SimpleCIDRAffinityFilter
and MetricsFilter: Nova's unit-test tables (ComputeCapabilitiesFilter's and ImagePropertiesFilter's
are in test_nova_compute_capabilities.py and test_nova_image_filters.py), the version predicate,
and kernel == reference on random fleets whose requests engage these rules."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placecheck_engine.columns import build_columns
from placecheck_engine.config import Profile
from placecheck_engine.model import Fleet, Flavor, Host, Image, InvalidField, Inventory, Request, SchedulerHints
from placecheck_engine.rules import RULES
from placecheck_engine.rules import compute_capabilities as capabilities
from placecheck_engine.nova_fields import VersionPredicate, version_string
from placecheck_engine.rules import isolated_hosts, metrics_filter, simple_cidr_affinity
from placecheck_engine.rules.metrics_filter import parse_weight_setting
from fleetgen import fleets
from test_rules_kernel import UPPER_SNAKE, as_snapshot, scan

def verdicts(rule_name: str, fleet: Fleet, request: Request, profile: Profile = Profile()) -> list:
    """Per host: None when it passes, else its Rejection; the kernel must agree with the reference."""
    columns = as_snapshot(build_columns(fleet))
    rule = RULES[rule_name]
    [active] = rule.compile(request, columns, profile)
    if active.params is None:
        refused = [False] * columns.host_count
    else:
        refused, _ = scan(rule, active, columns, 0, columns.host_count, 0)
    assert [not rule.reference(active.name, host, fleet, request, profile, 0) for host in fleet.hosts] \
        == list(refused)
    return [rule.explain(active, columns, row, 0) if fails else None for row, fails in enumerate(refused)]


def passes(rule_name: str, host: Host, request: Request, profile: Profile = Profile()) -> bool:
    return verdicts(rule_name, Fleet((host,)), request, profile)[0] is None


# --- ComputeCapabilitiesFilter ---------------------------------------------------------------

def capability_host(stats=None, **fields) -> Host:
    # Nova's table host has free_ram_mb=1024; vcpus_used and free_disk_mb are 0.
    return Host("host1", resources={"MEMORY_MB": Inventory(total=1024)}, stats=stats or {}, **fields)


def with_specs(specs: dict) -> Request:
    return Request(flavor=Flavor("f", specs))


# Nova's table is in test_nova_compute_capabilities.py.

def test_capabilities_profile_attributes_and_their_stats_fallback():
    host = capability_host({"hypervisor_version": "7"}, hypervisor_type="QEMU",
                           supported_instances=(("x86_64", "kvm", "hvm"),))
    for specs, expected in [
        ({"capabilities:hypervisor_type": "s== QEMU"}, True),
        ({"capabilities:hypervisor_type": "<or> Xen <or> QEMU"}, True),
        ({"hypervisor_type": "s!= QEMU"}, False),
        ({"capabilities:supported_instances": "<in> 'kvm'"}, True),
        # hypervisor_version is unknown (None), so Nova reads stats["hypervisor_version"].
        ({"capabilities:hypervisor_version": "== 7"}, True),
        ({"capabilities:cpu_info": "x"}, False),  # not carried and not in stats: missing
        ({"capabilities:hypervisor_type:x": "QEMU"}, False),  # "QEMU" is no JSON: missing
    ]:
        assert passes("ComputeCapabilitiesFilter", host, with_specs(specs)) == expected, specs


def test_capability_on_the_host_name_is_refused_as_a_request_error():
    with pytest.raises(InvalidField, match="host name"):
        verdicts("ComputeCapabilitiesFilter", Fleet((capability_host(),)), with_specs({"capabilities:host": "h"}))


def test_capability_messages_say_what_the_host_has():
    host = capability_host({"gpu": "two"}, hypervisor_type="Xen")
    [rejection] = verdicts("ComputeCapabilitiesFilter", Fleet((host,)),
                           with_specs({"capabilities:hypervisor_type": "s== QEMU"}))
    assert rejection.reason == capabilities.CAPABILITY_NOT_MET
    assert rejection.message == "extra spec capabilities:hypervisor_type 's== QEMU' not met: the host has 'Xen'"
    [rejection] = verdicts("ComputeCapabilitiesFilter", Fleet((host,)), with_specs({"capabilities:a:b": "1"}))
    assert rejection.reason == capabilities.CAPABILITY_MISSING and "has no a:b" in rejection.message
    # A numeric operator on a non-number raises in Nova; here that host is refused with its reason.
    [rejection] = verdicts("ComputeCapabilitiesFilter", Fleet((host,)), with_specs({"gpu": ">= 2"}))
    assert rejection.reason == capabilities.CAPABILITY_NOT_COMPARABLE


def test_capabilities_on_per_host_numbers_over_every_scan_path():
    # free_ram_mb 0..9 x 100; VCPU only on even hosts, so cpu_allocation_ratio falls back to stats.
    fleet = Fleet(tuple(Host(f"h{i}", resources={"MEMORY_MB": Inventory(total=1000, used=i * 100)}
                             | ({"VCPU": Inventory(total=8, allocation_ratio=4.0)} if i % 2 == 0 else {}),
                             stats={"cpu_allocation_ratio": "2.0"} if i % 3 == 0 else {},
                             host_ip=f"10.0.0.{i}" if i else "")
                        for i in range(10)))
    for specs, expected in [
        ({"free_ram_mb": ">= 500"}, [i <= 5 for i in range(10)]),  # numpy comparison
        ({"free_ram_mb": "<or> 100 <or> 1000"}, [i in (0, 9) for i in range(10)]),  # per distinct value
        ({"capabilities:free_ram_mb:real": "= 800"}, [i <= 2 for i in range(10)]),  # a walk past an int
        ({"cpu_allocation_ratio": "s== 4.0"}, [i % 2 == 0 for i in range(10)]),
        ({"cpu_allocation_ratio": ">= 2"}, [i % 2 == 0 or i % 3 == 0 for i in range(10)]),
        ({"host_ip": "<in> 10.0.0."}, [i > 0 for i in range(10)]),
        ({"num_instances": "0", "free_ram_mb": "!= 300"}, [i != 7 for i in range(10)]),
    ]:
        assert [v is None for v in verdicts("ComputeCapabilitiesFilter", fleet, with_specs(specs))] == expected, specs


# --- oslo.utils VersionPredicate, as ImagePropertiesFilter evaluates img_hv_requested_version ---
# (Nova's ImagePropertiesFilter table is in test_nova_image_filters.py.)

@pytest.mark.parametrize("predicate, version, expected", [
    (">=6.0,<6.2", 6001000, True), (">=6.0", 6000000, True), ("==6", 6000000, True),
    ("!=6.0.0", 6000000, False), (">6.0", 6000001, True), ("<6.0rc1", 6000000, False),
    (">6.0rc1", 6000000, True), ("<6.0.post1", 6000000, True), ("==6.0+local", 6000000, False),
    ("<6.0+local", 6000000, True), (">=1!0.1", 99000000, False), (" >= 6.0 , <= 7 ", 7000000, True),
    (">=v6.0", 5999999, False), ("<6.0.dev1", 5000000, True),
])
def test_version_predicate(predicate, version, expected):
    assert VersionPredicate.parse(predicate).satisfied_by(version_string(version)) == expected


@pytest.mark.parametrize("bad", ["6.0", "=>6.0", ">=6.*", ">=", ">=6.0,"])
def test_version_predicate_rejects(bad):
    with pytest.raises(ValueError):
        VersionPredicate.parse(bad)


def test_version_string():
    assert [version_string(v) for v in (6002000, 5000, 6000000, 1, 1000)] == ["6.2.0", "5.0", "6.0.0", "1", "1.0"]


# --- IsolatedHostsFilter (Nova's test_isolated_hosts_filter.py) -----------------------------

@pytest.mark.parametrize("images, hosts, restrict, expected", [
    # expected: (isolated host, isolated image), (isolated host, other), (free host, isolated), (free, other)
    (("iso",), ("isolated_host",), True, (True, False, False, True)),
    (("iso",), ("isolated_host",), False, (True, True, False, True)),
    ((), (), True, (True, True, True, True)),
    (("iso",), (), True, (False, True, False, True)),
    ((), ("isolated_host",), True, (False, False, True, True)),
])
def test_isolated_hosts_nova_table(images, hosts, restrict, expected):
    profile = Profile(isolated_images=images, isolated_hosts=hosts,
                      restrict_isolated_hosts_to_isolated_images=restrict)
    fleet = Fleet((Host("isolated_host"), Host("free_host")))
    outcomes = {}
    for image in ("iso", "other"):
        verdict = verdicts("IsolatedHostsFilter", fleet, Request(image=Image(image)), profile)
        outcomes[image] = [v is None for v in verdict]
    assert (outcomes["iso"][0], outcomes["other"][0], outcomes["iso"][1], outcomes["other"][1]) == expected


def test_isolated_hosts_reasons():
    profile = Profile(isolated_images=("iso",), isolated_hosts=("isolated_host",))
    fleet = Fleet((Host("isolated_host"), Host("free_host")))
    assert verdicts("IsolatedHostsFilter", fleet, Request(image=Image("iso")), profile)[1].reason \
        == isolated_hosts.ISOLATED_IMAGE_ON_OTHER_HOST
    # Boot from volume (no image) is not an isolated image.
    assert verdicts("IsolatedHostsFilter", fleet, Request(), profile)[0].reason \
        == isolated_hosts.ISOLATED_HOST_FOR_OTHER_IMAGE


# --- SimpleCIDRAffinityFilter (Nova's test_affinity_filters.py) -----------------------------

def near(ip: str, cidr: str = "/24") -> Request:
    return Request(scheduler_hints=SchedulerHints(build_near_host_ip=ip, cidr=cidr))


@pytest.mark.parametrize("host_ip, request_, expected", [
    ("10.8.1.1", near("10.8.1.100", "/24"), True),
    ("10.8.1.1", near("10.8.1.100", "/32"), False),
    ("10.8.1.1", Request(), True),
    ("10.8.1.1", near("10.8.0.0", "/16"), True),
    ("10.8.1.1", near("0.0.0.0", "/0"), True),
    ("fe80::1", near("10.8.1.100", "/0"), False),  # versions differ
    ("fe80::1", near("fe80::abcd", "/64"), True),
    ("fe80::1", near("fe81::1", "/64"), False),
    ("10.8.1.1", near("fe80::1", "/0"), False),
    ("", near("10.8.1.100"), False),
])
def test_simple_cidr_affinity(host_ip, request_, expected):
    assert passes("SimpleCIDRAffinityFilter", Host("host1", host_ip=host_ip), request_) == expected


def test_simple_cidr_reasons_and_bad_network():
    fleet = Fleet((Host("a", host_ip="10.9.0.1"), Host("b", host_ip="not-an-ip")))
    first, second = verdicts("SimpleCIDRAffinityFilter", fleet, near("10.8.1.100"))
    assert first.reason == simple_cidr_affinity.HOST_IP_OUTSIDE_NETWORK
    assert first.message == "host_ip 10.9.0.1 is not in 10.8.1.0/24 (build_near_host_ip + cidr 10.8.1.100/24)"
    assert second.reason == simple_cidr_affinity.HOST_IP_INVALID
    with pytest.raises(InvalidField):
        verdicts("SimpleCIDRAffinityFilter", fleet, near("10.8.1.100", "/33"))


# --- MetricsFilter (Nova's test_metrics_filters.py) -----------------------------------------

def test_metrics_filter():
    host = Host("host1", metrics={"cpu.frequency": 1.0, "numa.membw.current": 2.0})
    profile = Profile(metrics_weight_setting=("cpu.frequency=1", "numa.membw.current=2"))
    assert passes("MetricsFilter", host, Request(), profile)
    [rejection] = verdicts("MetricsFilter", Fleet((Host("host1", metrics={"cpu.frequency": 1.0}),)), Request(),
                           Profile(metrics_weight_setting=("foo=1", "bar=2")))
    assert rejection.reason == metrics_filter.MISSING_METRICS and "bar, foo" in rejection.message


def test_weight_setting_ignores_what_nova_ignores():
    assert parse_weight_setting(("a=1", "b", "=2", "c=x", "d=-0.5", "e==1")) == [("a", 1.0), ("d", -0.5)]


# --- kernel == reference ------------------------------------------------------------------

MY_RULES = ("ComputeCapabilitiesFilter", "ImagePropertiesFilter", "IsolatedHostsFilter",
            "SimpleCIDRAffinityFilter", "MetricsFilter")
PROFILE_SPEC_KEYS = ("capabilities:hypervisor_type", "hypervisor_type", "capabilities:hypervisor_version",
                     "cpu_vendor", "capabilities:hardware_profile", "capabilities:stats:cpu_vendor",
                     "capabilities:supported_instances", "capabilities:cpu_info:vendor", "absent", "hw:x")
ROW_SPEC_KEYS = ("free_ram_mb", "capabilities:vcpus_used", "free_disk_mb", "ram_allocation_ratio", "num_io_ops",
                 "failed_builds", "host_ip", "capabilities:total_usable_disk_gb:real")
STRING_REQUIREMENTS = ("QEMU", "s== QEMU", "s!= xen", "<or> Intel <or> AMD", "<in> 10.0.0", "s< 5",
                       "<all-in> x86_64 hvm", "Intel", "", "0", "1.0", ">= 6000000")
# Small operands, so that hosts' numbers often equal them.
NUMERIC_REQUIREMENTS = ("= 2", ">= 3", "<= 0", "== 0", "!= 1.5", "!= 0", "<= 8", "== 1.0", "= 16")
capability_specs = st.dictionaries(
    st.sampled_from(PROFILE_SPEC_KEYS + ROW_SPEC_KEYS),
    st.sampled_from(STRING_REQUIREMENTS + NUMERIC_REQUIREMENTS), max_size=3) | st.dictionaries(
    st.sampled_from(ROW_SPEC_KEYS), st.sampled_from(NUMERIC_REQUIREMENTS), min_size=1, max_size=1)


@st.composite
def host_attribute_scenarios(draw):
    fleet = draw(fleets(max_hosts=10))
    names = [host.name for host in fleet.hosts]
    specs = draw(capability_specs)
    properties = draw(st.fixed_dictionaries({}, optional={
        "hw_architecture": st.sampled_from(("x86_64", "aarch64", "i386", "AMD64")),
        "img_hv_type": st.sampled_from(("qemu", "xen", "xapi")),
        "hw_vm_mode": st.sampled_from(("hvm", "xen", "pv")),
        "img_hv_requested_version": st.sampled_from((">=6.0", "<5", ">=4.11,<6.2", "==6.2.0")),
        # Glance's legacy names, which Nova renames (the current name wins when both are given).
        "architecture": st.sampled_from(("x86_64", "aarch64")),
        "hypervisor_type": st.sampled_from(("QEMU", "xen")),
        "vm_mode": st.sampled_from(("hvm", "pv")),
        "hypervisor_version_requires": st.sampled_from((">=6.0", "<5")),
    }))
    image = draw(st.one_of(st.none(), st.builds(Image, st.sampled_from(("img-a", "img-b", "")),
                                                st.just(properties))))
    hints = draw(st.one_of(st.just(SchedulerHints()), st.builds(
        SchedulerHints, build_near_host_ip=st.sampled_from(("10.0.0.9", "10.0.1.1", "192.168.1.1", "fe80::9")),
        cidr=st.sampled_from(("/24", "/16", "/32", "/0", "/8", "/64", "/120")))))
    if hints.build_near_host_ip and ":" not in hints.build_near_host_ip and int(hints.cidr[1:]) > 32:
        hints = SchedulerHints(build_near_host_ip=hints.build_near_host_ip)
    profile = Profile(
        isolated_hosts=tuple(draw(st.lists(st.sampled_from(names + ["not-a-host"]), max_size=3))),
        isolated_images=tuple(draw(st.lists(st.sampled_from(("img-a", "img-c")), max_size=2))),
        restrict_isolated_hosts_to_isolated_images=draw(st.booleans()),
        image_properties_default_architecture=draw(st.sampled_from(("", "x86_64"))),
        metrics_weight_setting=tuple(draw(st.lists(st.sampled_from(
            ("cpu.percent=1.0", "mem.free=-1", "cpu.frequency=2", "bad")), max_size=2))))
    return fleet, Request(flavor=Flavor("f", specs), image=image, scheduler_hints=hints), profile


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host_attribute_scenarios(), st.data())
def test_kernels_equal_references(scenario, data):
    fleet, request, profile = scenario
    columns = as_snapshot(build_columns(fleet))
    n = columns.host_count
    start = data.draw(st.integers(0, n), label="start")
    stop = data.draw(st.integers(start, n), label="stop")
    for name in MY_RULES:
        rule = RULES[name]
        [active] = rule.compile(request, columns, profile)
        expected = [not rule.reference(name, host, fleet, request, profile, 0) for host in fleet.hosts]
        if active.params is None:
            assert not any(expected), name
            continue
        refused, count = scan(rule, active, columns, 0, n, 0)
        assert refused.tolist() == expected and count == sum(expected), name
        partial, partial_count = scan(rule, active, columns, start, stop, 0)
        assert partial.tolist() == [start <= row < stop and expected[row] for row in range(n)], name
        assert partial_count == sum(expected[start:stop])
        for row in np.flatnonzero(refused).tolist():
            assert scan(rule, active, columns, row, row + 1, 0)[1] == 1
            rejection = rule.explain(active, columns, row, 0)
            assert rejection.rule == name and UPPER_SNAKE.match(rejection.reason) and rejection.message


def test_an_empty_hypervisor_type_is_unreported():
    # The API carries an unknown hypervisor_type as "": Nova's None, so stats are read instead.
    request = with_specs({"capabilities:hypervisor_type": "s!= Xen"})
    assert not passes("ComputeCapabilitiesFilter", capability_host(hypervisor_type=""), request)
    assert passes("ComputeCapabilitiesFilter", capability_host({"hypervisor_type": "QEMU"}, hypervisor_type=""),
                  request)
