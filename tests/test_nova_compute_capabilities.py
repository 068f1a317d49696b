"""ComputeCapabilitiesFilter on the table of Nova 34's own unit test
(nova/tests/unit/scheduler/filters/test_compute_capabilities_filters.py; each case's id is Nova's
test name), decided by the kernel and the plain-Python reference alike (verdicts() asserts they
agree), and `capabilities:supported_instances` on the canonical values Nova's HostState holds.

Nova's table host is a FakeHostState with free_ram_mb 1024 and the capabilities set as
attributes. Here it is a host with 1024 MB of MEMORY_MB (vcpus_used and free_disk_mb 0, as
there). The attributes placecheck does not carry become what Nova falls back to when the
attribute is None: a stats key of that name. So `cpu_info` is stats["cpu_info"], and the table's
`stats` values are strings, nested ones as JSON (Nova walks into JSON strings as into dicts).
Nova's extra specs are strings, except free_disk_mb's 0 and 1, given here as "0" and "1".
"""
from __future__ import annotations

import pytest

from placecheck_engine.model import Fleet
from test_host_attribute_rules import capability_host, passes, verdicts, with_specs

CPU_INFO = ('{"vendor": "Intel", "model": "core2duo", "arch": "i686", "features": ["lahf_lm", "rdtscp"], '
            '"topology": {"cores": 1, "threads": 1, "sockets": 1}}')


@pytest.mark.parametrize("stats, specs, expected", [
    pytest.param({}, {}, True, id="test_compute_filter_passes_without_extra_specs"),
    # test_compute_filter_fails_without_host_state asks about host None: every host here has a state.
    pytest.param({"cpu_info": " { } "}, {"capabilities:cpu_info:vendor": "Intel"}, False,
                 id="test_compute_filter_fails_without_capabilities"),
    pytest.param({"cpu_info": CPU_INFO}, {"capabilities:cpu_info:vendor": "Intel"}, True,
                 id="test_compute_filter_pass_cpu_info_as_text_type"),
    pytest.param({"cpu_info": CPU_INFO}, {"cpu_info": CPU_INFO}, True,
                 id="test_compute_filter_pass_cpu_info_with_backward_compatibility"),
    pytest.param({"cpu_info": CPU_INFO}, {"cpu_info": ""}, False,
                 id="test_compute_filter_fail_cpu_info_with_backward_compatibility"),
    pytest.param({"cpu_info": "cpu_info"}, {"capabilities:cpu_info:vendor": "Intel"}, False,
                 id="test_compute_filter_fail_cpu_info_as_text_type_not_valid"),
    pytest.param({"cpu_info": '{"maxphysaddr": {"mode": "emulate", "bits": 42}}'}, {"hw:maxphysaddr_bits": "42"},
                 True, id="test_compute_filter_pass_maxphysaddr_bits"),
    pytest.param({"cpu_info": '{"maxphysaddr": {"mode": "emulate", "bits": 20}}'}, {"hw:maxphysaddr_bits": "42"},
                 False, id="test_compute_filter_fails_maxphysaddr_bits"),
    pytest.param({"cpu_info": "{ }"}, {"hw:maxphysaddr_bits": "42"}, False,
                 id="test_compute_filter_fails_without_maxphysaddr_bits"),
    pytest.param({"opt1": "1", "opt2": "2"}, {"opt1": "1", "opt2": "2"}, True,
                 id="test_compute_filter_passes_extra_specs_simple"),
    pytest.param({"opt1": "1", "opt2": "2"}, {"opt1": "1", "opt2": "222"}, False,
                 id="test_compute_filter_fails_extra_specs_simple"),
    pytest.param({"opt1": "1", "opt2": "2"}, {"capabilities:opt1": "1"}, True,
                 id="test_compute_filter_pass_extra_specs_simple_with_scope"),
    pytest.param({"capabilities": "1"}, {"capabilities": "1"}, True,
                 id="test_compute_filter_pass_extra_specs_same_as_scope"),
    pytest.param({"opt1": "1", "opt2": "2"}, {"XXYY": "1"}, True, id="test_compute_filter_pass_self_defined_specs"),
    pytest.param({"opt1": "1", "opt2": "2"}, {"wrong_scope:opt1": "1"}, True,
                 id="test_compute_filter_extra_specs_simple_with_wrong_scope"),
    pytest.param({"opt1": '{"a": 1, "b": {"aa": 2}}', "opt2": "2"}, {"opt1:a": "1", "capabilities:opt1:b:aa": "2"},
                 True, id="test_compute_filter_extra_specs_pass_multi_level_with_scope"),
    pytest.param({}, {"free_ram_mb": ">= 300"}, True, id="test_compute_filter_pass_ram_with_backward_compatibility"),
    pytest.param({}, {"free_ram_mb": "<= 300"}, False, id="test_compute_filter_fail_ram_with_backward_compatibility"),
    pytest.param({}, {"vcpus_used": "<= 20"}, True, id="test_compute_filter_pass_cpu_with_backward_compatibility"),
    pytest.param({}, {"vcpus_used": ">= 20"}, False, id="test_compute_filter_fail_cpu_with_backward_compatibility"),
    pytest.param({}, {"free_disk_mb": "0"}, True, id="test_compute_filter_pass_disk_with_backward_compatibility"),
    pytest.param({}, {"free_disk_mb": "1"}, False, id="test_compute_filter_fail_disk_with_backward_compatibility"),
])
def test_compute_capabilities_nova_table(stats, specs, expected):
    assert passes("ComputeCapabilitiesFilter", capability_host(stats), with_specs(specs)) == expected


# --- supported_instances as Nova's HostState holds them: canonical, lists -------------------

@pytest.mark.parametrize("specs, expected", [
    ({"capabilities:supported_instances": "<in> x86_64"}, True),
    ({"capabilities:supported_instances": "<in> X86_64"}, False),
    ({"capabilities:supported_instances": "<in> 'qemu'"}, True),
    ({"capabilities:supported_instances": "<in> QEMU"}, False),
    # str() of Nova's list of [arch, hv_type, vm_mode] lists.
    ({"capabilities:supported_instances": "<in> [['x86_64',"}, True),
    ({"capabilities:supported_instances": "<in> ['i686',"}, True),
])
def test_supported_instances_capability_reads_canonical_values(specs, expected):
    host = capability_host(supported_instances=(("AMD64", "QEMU", "hv"), ("i386", "xapi", "pv")))
    assert passes("ComputeCapabilitiesFilter", host, with_specs(specs)) == expected


def test_supported_instances_capability_refusal_shows_the_canonical_value():
    host = capability_host(supported_instances=(("X86_64", "QEMU", "HVM"),))
    [rejection] = verdicts("ComputeCapabilitiesFilter", Fleet((host,)),
                           with_specs({"capabilities:supported_instances": "<in> KVM"}))
    assert "[['x86_64', 'qemu', 'hvm']]" in rejection.message
