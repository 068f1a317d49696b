"""ImagePropertiesFilter and AggregateImagePropertiesIsolation on the tables of Nova 34's own unit
tests (nova/tests/unit/scheduler/filters/test_image_props_filters.py and
test_aggregate_image_properties_isolation_filters.py; each case's id is Nova's test name), each
case decided by the kernel and the plain-Python reference alike (verdicts() asserts they agree),
then the quirks of Nova's typed image properties and canonical host values beside them.

Nova's tests build ImageMetaProps from typed values (hw_cpu_cores=2); placecheck receives
Glance's strings ("2"), which engine.image_meta types as Nova's from_dict does.
"""
from __future__ import annotations

import copy

import pytest

from placecheck_engine.config import Profile
from placecheck_engine.fleetfile import fleet_from_json
from placecheck_engine.model import Aggregate, Fleet, Host, Image, InvalidField, Request
from placecheck_engine.rules import aggregate_image_properties_isolation as image_isolation
from placecheck_engine.rules import image_properties
from placecheck_server import convert
from test_fleetfile import SMALL_FLEET
from test_host_attribute_rules import passes, verdicts

X86_KVM_HVM = ("x86_64", "kvm", "hvm")
VERSION_6_0_0 = 6000000  # versionutils.convert_version_to_int('6.0.0')


def image_host(*supported, version: int | None = VERSION_6_0_0) -> Host:
    return Host("host1", hypervisor_version=version, supported_instances=tuple(supported))


def with_image(**properties) -> Request:
    return Request(image=Image("img", properties))


# --- ImagePropertiesFilter: Nova's table ---------------------------------------------------

ALL_THREE = dict(hw_architecture="x86_64", img_hv_type="kvm", hw_vm_mode="hvm")


@pytest.mark.parametrize("request_, host, expected", [
    pytest.param(with_image(**ALL_THREE, img_hv_requested_version=">=6.0,<6.2"), image_host(X86_KVM_HVM), True,
                 id="test_image_properties_filter_passes_same_inst_props_and_version"),
    pytest.param(with_image(hw_architecture="armv7l", img_hv_type="qemu", hw_vm_mode="hvm"),
                 image_host(X86_KVM_HVM), False, id="test_image_properties_filter_fails_different_inst_props"),
    pytest.param(with_image(**ALL_THREE, img_hv_requested_version=">=6.2"), image_host(X86_KVM_HVM), False,
                 id="test_image_properties_filter_fails_different_hyper_version"),
    pytest.param(with_image(hw_architecture="x86_64", hw_vm_mode="hvm"), image_host(X86_KVM_HVM), True,
                 id="test_image_properties_filter_passes_partial_inst_props"),
    pytest.param(with_image(hw_architecture="x86_64", hw_vm_mode="hvm"), image_host(("x86_64", "xen", "xen")), False,
                 id="test_image_properties_filter_fails_partial_inst_props"),
    pytest.param(Request(), image_host(X86_KVM_HVM), True,
                 id="test_image_properties_filter_passes_without_inst_props"),
    pytest.param(with_image(**ALL_THREE), image_host(), False,
                 id="test_image_properties_filter_fails_without_host_props"),
    pytest.param(with_image(**ALL_THREE, img_hv_requested_version=">=6.0"), image_host(X86_KVM_HVM, version=None),
                 True, id="test_image_properties_filter_passes_without_hyper_version"),
    pytest.param(with_image(**ALL_THREE, img_hv_requested_version=">=6.0"), image_host(X86_KVM_HVM, version=5000),
                 False, id="test_image_properties_filter_fails_with_unsupported_hyper_ver"),
    pytest.param(with_image(hw_vm_mode="pv"), image_host(("x86_64", "xen", "xen")), True,
                 id="test_image_properties_filter_pv_mode_compat"),
    pytest.param(with_image(hw_vm_mode="hv"), image_host(X86_KVM_HVM), True,
                 id="test_image_properties_filter_hvm_mode_compat"),
    pytest.param(with_image(hw_architecture="x86_32"), image_host(("i686", "kvm", "hvm")), True,
                 id="test_image_properties_filter_xen_arch_compat"),
    pytest.param(with_image(img_hv_type="xapi"), image_host(("i686", "xen", "hvm")), True,
                 id="test_image_properties_filter_xen_hv_type_compat"),
    pytest.param(with_image(hw_vm_mode="baremetal"), image_host(("i686", "baremetal", "hvm")), True,
                 id="test_image_properties_filter_baremetal_vmmode_compat"),
    # Nova compares hw_maxphysaddr_bits with the host's cpu_info, which hosts here do not
    # report (a real HostState's cpu_info is the compute node's JSON string, on which Nova's
    # check raises): placecheck's documented answer is that the bits are not checked, so both
    # of Nova's cases pass here (Nova: True, then False).
    pytest.param(with_image(**ALL_THREE, hw_maxphysaddr_bits="42"), image_host(X86_KVM_HVM, version=None), True,
                 id="test_image_properties_filter_pass_maxphysaddr_bits"),
    pytest.param(with_image(**ALL_THREE, hw_maxphysaddr_bits="42"), image_host(X86_KVM_HVM, version=None), True,
                 id="test_image_properties_filter_fails_maxphysaddr_bits"),
])
def test_image_properties_nova_table(request_, host, expected):
    assert passes("ImagePropertiesFilter", host, request_) == expected


def test_image_properties_filter_uses_default_conf_value():
    host = image_host(("aarch64", "kvm", "hvm"))
    assert not passes("ImagePropertiesFilter", host, with_image(),
                      Profile(image_properties_default_architecture="x86_64"))
    assert passes("ImagePropertiesFilter", host, with_image())
    assert not passes("ImagePropertiesFilter", host, Request(), Profile(image_properties_default_architecture="x86_64"))


# --- ImagePropertiesFilter: Glance's legacy names, canonical values on both sides ------------

@pytest.mark.parametrize("properties, supported, version, expected", [
    ({"architecture": "aarch64"}, X86_KVM_HVM, VERSION_6_0_0, False),
    ({"architecture": "x86_64"}, X86_KVM_HVM, VERSION_6_0_0, True),
    ({"hypervisor_type": "xen"}, X86_KVM_HVM, VERSION_6_0_0, False),
    ({"vm_mode": "pv"}, ("x86_64", "xen", "xen"), VERSION_6_0_0, True),
    ({"architecture": "x86_64", "hypervisor_version_requires": ">=6.2"}, X86_KVM_HVM, VERSION_6_0_0, False),
    # The current name wins over the legacy one.
    ({"architecture": "aarch64", "hw_architecture": "x86_64"}, X86_KVM_HVM, VERSION_6_0_0, True),
    ({"hw_architecture": "AMD64", "img_hv_type": "KVM", "hw_vm_mode": "HVM"}, X86_KVM_HVM, VERSION_6_0_0, True),
    # The host's entry is canonical too: ("X86_64", "QEMU", "hv") is x86_64 / qemu / hvm.
    ({"hw_architecture": "x86_64", "img_hv_type": "qemu", "hw_vm_mode": "hvm"}, ("X86_64", "QEMU", "hv"), None, True),
    ({"hw_architecture": "i686"}, ("i386", "xapi", "pv"), None, True),
    # A version requirement alone asks nothing of the host.
    ({"hypervisor_version_requires": ">=9"}, X86_KVM_HVM, VERSION_6_0_0, True),
])
def test_legacy_names_and_canonical_values(properties, supported, version, expected):
    assert passes("ImagePropertiesFilter", image_host(supported, version=version), with_image(**properties)) \
        == expected


def test_image_explanations_and_invalid_names():
    fleet = Fleet((Host("host1"), Host("host2", hypervisor_version=6001000, supported_instances=(X86_KVM_HVM,))))
    first, second = verdicts("ImagePropertiesFilter", fleet,
                             with_image(architecture="x86_64", hypervisor_version_requires=">=6.2"))
    assert first.reason == image_properties.NO_SUPPORTED_INSTANCES
    assert second.reason == image_properties.HYPERVISOR_VERSION_NOT_SATISFIED
    assert second.message == "img_hv_requested_version '>=6.2' not met: hypervisor version 6.1.0"
    [refused] = verdicts("ImagePropertiesFilter", Fleet(fleet.hosts[1:]), with_image(hw_architecture="AMD64",
                                                                                     img_hv_type="xapi"))
    assert refused.reason == image_properties.UNSUPPORTED_IMAGE_PROPERTIES
    assert refused.message == "the image asks for hw_architecture=x86_64, img_hv_type=xen; the host supports x86_64/kvm/hvm"
    for bad, name in ((dict(hw_architecture="sparc128"), "hw_architecture"), (dict(img_hv_type="kvm2"), "img_hv_type"),
                      (dict(vm_mode="pvh"), "vm_mode"),
                      (dict(hw_architecture="x86_64", img_hv_requested_version="~=6.0"), "img_hv_requested_version")):
        with pytest.raises(InvalidField) as raised:
            verdicts("ImagePropertiesFilter", fleet, with_image(**bad))
        assert raised.value.field == f"request.image.properties[{name}]"


# --- AggregateImagePropertiesIsolation: Nova's table ---------------------------------------

def aggregated_host(metadata: dict[str, str]) -> Fleet:
    """Nova's tests mock the host's aggregate metadata: here one aggregate holding the host."""
    return Fleet((Host("host1"),), (Aggregate(1, "agg1", frozenset({"host1"}), metadata),))


def isolation_passes(metadata: dict[str, str], properties: dict[str, str], profile: Profile = Profile()) -> bool:
    [verdict] = verdicts("AggregateImagePropertiesIsolation", aggregated_host(metadata),
                         Request(image=Image("img", properties)), profile)
    if verdict is not None:
        assert verdict.reason == image_isolation.IMAGE_PROPERTY_NOT_IN_AGGREGATE
    return verdict is None


@pytest.mark.parametrize("metadata, properties, expected", [
    pytest.param({"hw_vm_mode": "hvm"}, {"hw_vm_mode": "hvm"}, True,
                 id="test_aggregate_image_properties_isolation_passes"),
    pytest.param({"hw_vm_mode": "hvm,xen"}, {"hw_vm_mode": "hvm"}, True,
                 id="test_aggregate_image_properties_isolation_passes_comma"),
    pytest.param({"os_distro": "windows,linux"}, {"os_distro": "windows,"}, False,
                 id="test_aggregate_image_properties_isolation_props_bad_comma"),
    pytest.param({"hw_vm_mode": "hvm", "hw_cpu_cores": "2"}, {"hw_vm_mode": "hvm", "hw_cpu_cores": "2"}, True,
                 id="test_aggregate_image_properties_isolation_multi_props_passes"),
    pytest.param({"hw_vm_mode": "hvm"}, {}, True,
                 id="test_aggregate_image_properties_isolation_props_with_meta_passes"),
    pytest.param({}, {"hw_vm_mode": "hvm"}, True,
                 id="test_aggregate_image_properties_isolation_props_imgprops_passes"),
    pytest.param({"hw_vm_mode": "hvm"}, {"hw_vm_mode": "xen"}, False,
                 id="test_aggregate_image_properties_isolation_props_not_match_fails"),
    pytest.param({"hw_vm_mode": "hvm", "hw_cpu_cores": "1"}, {"hw_vm_mode": "hvm", "hw_cpu_cores": "2"}, False,
                 id="test_aggregate_image_properties_isolation_props_not_match2_fails"),
    pytest.param({"os": "linux"}, {"os_type": "linux"}, True,
                 id="test_aggregate_image_properties_iso_props_with_custom_meta"),
    pytest.param({"os_type": "linux"}, {"os_type": "linux"}, True,
                 id="test_aggregate_image_properties_iso_props_with_matching_meta_pass"),
    pytest.param({"os_type": "windows"}, {"os_type": "linux"}, False,
                 id="test_aggregate_image_properties_iso_props_with_matching_meta_fail"),
])
def test_aggregate_image_properties_isolation_nova_table(metadata, properties, expected):
    assert isolation_passes(metadata, properties) == expected


def test_aggregate_image_properties_isolation_props_namespace():
    profile = Profile(aggregate_image_properties_isolation_namespace="hw",
                      aggregate_image_properties_isolation_separator="_")
    assert isolation_passes({"hw_vm_mode": "hvm", "img_owner_id": "foo"},
                            {"hw_vm_mode": "hvm", "img_owner_id": "wrong"}, profile)
    assert not isolation_passes({"hw_vm_mode": "hvm"}, {"hw_vm_mode": "xen"}, profile)


# --- AggregateImagePropertiesIsolation: str() of Nova's typed values -------------------------

@pytest.mark.parametrize("metadata, properties, expected", [
    ({"hw_qemu_guest_agent": "True"}, {"hw_qemu_guest_agent": "yes"}, True),  # str(True)
    ({"hw_qemu_guest_agent": "yes"}, {"hw_qemu_guest_agent": "yes"}, False),
    ({"hw_qemu_guest_agent": "yes"}, {"hw_qemu_guest_agent": "no"}, True),  # False is never compared
    ({"hw_cpu_cores": "4"}, {"hw_cpu_cores": "04"}, True),  # str(4)
    ({"hw_cpu_cores": "04"}, {"hw_cpu_cores": "04"}, False),
    ({"hw_cpu_cores": "1"}, {"hw_cpu_cores": "0"}, True),  # nor is 0
    ({"hw_architecture": "x86_64"}, {"hw_architecture": "AMD64"}, True),  # canonical enum value
    # Legacy names are renamed (test_aggregate_rules.py), so no field keeps the legacy name.
    ({"architecture": "aarch64"}, {"architecture": "x86_64"}, True),
    ({"img_hv_type": "qemu"}, {"hypervisor_type": "QEMU"}, True),
])
def test_typed_values_compared_as_nova_compares_them(metadata, properties, expected):
    assert isolation_passes(metadata, properties) == expected


def test_isolation_message_shows_novas_value():
    [rejection] = verdicts("AggregateImagePropertiesIsolation", aggregated_host({"hw_qemu_guest_agent": "yes"}),
                           with_image(hw_qemu_guest_agent="yes"))
    assert rejection.message == "image property hw_qemu_guest_agent='True' is not among the aggregates' " \
                                "hw_qemu_guest_agent yes"


# --- supported_instances as Nova loads them (HVSpec) ---------------------------------------

def test_a_host_holds_canonical_supported_instances():
    host = Host("h", supported_instances=(["X86_64", "QEMU", "hv"], ("i386", "xapi", "pv"), ("amd64", "kvm", "baremetal")))
    assert host.supported_instances == (("x86_64", "qemu", "hvm"), ("i686", "xen", "xen"), ("x86_64", "kvm", "hvm"))


@pytest.mark.parametrize("entry, field", [
    (["x86", "qemu", "hvm"], "architecture"),
    (["x86_64", "kvm2", "hvm"], "hypervisor_type"),
    (["x86_64", "qemu", "pvh"], "vm_mode"),
    (["", "qemu", "hvm"], "architecture"),
])
def test_a_name_nova_cannot_load_is_refused_on_every_route(entry, field):
    with pytest.raises(InvalidField) as raised:
        Host("h", supported_instances=(("x86_64", "kvm", "hvm"), tuple(entry)))
    assert raised.value.field == f"supported_instances[1].{field}"

    document = copy.deepcopy(SMALL_FLEET)
    document["hosts"][1]["supported_instances"] = [entry]
    with pytest.raises(InvalidField) as raised:
        fleet_from_json(document)
    assert raised.value.field == f"hosts[1].supported_instances[0].{field}"

    message = convert.fleet_to_proto(Fleet((Host("a"), Host("b"))))
    architecture, hypervisor_type, vm_mode = entry
    message.hosts[1].supported_instances.add(architecture=architecture, hypervisor_type=hypervisor_type,
                                             vm_mode=vm_mode)
    with pytest.raises(InvalidField) as raised:
        convert.fleet_from_proto(message)
    assert raised.value.field == f"fleet.hosts[1].supported_instances[0].{field}"


def test_the_fleet_file_and_the_api_load_canonical_names():
    document = copy.deepcopy(SMALL_FLEET)
    document["hosts"][0]["supported_instances"] = [["AMD64", "QEMU", "HVM"]]
    fleet = fleet_from_json(document)
    assert fleet.hosts[0].supported_instances == (("x86_64", "qemu", "hvm"),)
    message = convert.fleet_to_proto(fleet)
    message.hosts[0].supported_instances[0].architecture = "i486"
    assert convert.fleet_from_proto(message).hosts[0].supported_instances == (("i686", "qemu", "hvm"),)
