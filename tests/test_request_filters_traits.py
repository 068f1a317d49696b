"""Nova's request filters that add required traits from the flavor and image.

Nova's own unit tests (nova/tests/unit/scheduler/test_request_filter.py) ported as tables, each
row's id the Nova test it comes from: the traits Nova adds to `root_required` must be the traits
our rule requires, and a host lacking any of them is refused by both the plain-Python reference
and the kernel. Then cases Nova's tests leave out (checked against Nova 34's code), explanations,
refusals of bad input, and a property test of kernel == reference.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placecheck_engine.columns import build_columns
from placecheck_engine.config import Profile
from placecheck_engine.model import Fleet, Flavor, Host, Image, InvalidField, Request
from placecheck_engine.rules import RULES
from placecheck_engine.rules.request_filter_traits import RequestFilterTraits
from placecheck_server.convert import request_from_proto, request_to_proto
from test_rules_kernel import as_snapshot, scan

TRAIT_RULES = [rule for rule in RULES.values() if isinstance(rule, RequestFilterTraits)]
BOTH_OPTIONS = {"query_placement_for_image_type_support": True, "image_metadata_prefilter": True}


def request(extra_specs=None, properties=None, disk_format="") -> Request:
    image = None if properties is None and not disk_format else Image("img", dict(properties or {}), disk_format)
    return Request(flavor=Flavor("f", dict(extra_specs or {})), image=image)


def verdicts(rule, fleet: Fleet, req: Request, profile: Profile) -> tuple[list[bool], list[bool]]:
    """(reference, kernel) verdicts, one per host: True passes."""
    columns = as_snapshot(build_columns(fleet))
    [active] = rule.compile(req, columns, profile)
    kernel = [True] * columns.host_count
    if active.params is not None:
        refused, _ = scan(rule, active, columns, 0, columns.host_count, 0)
        kernel = (~refused).tolist()
    reference = [rule.reference(active.name, host, fleet, req, profile, 0) for host in fleet.hosts]
    return reference, kernel


def hosts_around(traits: set[str]) -> Fleet:
    """A host with exactly `traits`, one lacking each of them, one with none, one with unrelated traits."""
    hosts = [Host("exact", traits=frozenset(traits)), Host("bare"), Host("other", traits=frozenset({"CUSTOM_X"}))]
    hosts += [Host(f"without-{trait}", traits=frozenset(traits - {trait})) for trait in sorted(traits)]
    return Fleet(tuple(hosts))


def assert_requires(rule_name: str, req: Request, profile: Profile, expected: set[str]) -> None:
    rule = RULES[rule_name]
    assert set(rule.required_traits(req, profile)) == expected
    fleet = hosts_around(expected)
    wanted = [expected <= host.traits for host in fleet.hosts]
    assert verdicts(rule, fleet, req, profile) == (wanted, wanted)


def transform_image_metadata_case(architecture: str, emulation_architecture: str) -> tuple:
    """Nova's two transform_image_metadata tests: the same buses and models, two architectures."""
    properties = {"hw_disk_bus": "sata", "hw_cdrom_bus": "ide", "hw_video_model": "qxl", "hw_vif_model": "virtio",
                  "hw_architecture": architecture, "hw_emulation_architecture": emulation_architecture}
    traits = {"COMPUTE_GRAPHICS_MODEL_QXL", "COMPUTE_NET_VIF_MODEL_VIRTIO", "COMPUTE_STORAGE_BUS_IDE",
              "COMPUTE_STORAGE_BUS_SATA", f"HW_ARCH_{architecture.upper()}",
              f"COMPUTE_ARCH_{emulation_architecture.upper()}"}
    return "transform_image_metadata", BOTH_OPTIONS, {}, properties, "", traits


# (rule, profile options, flavor extra specs, image properties (None: no image), disk_format, traits)
NOVA_TESTS = {
    "test_require_image_type_support_disabled": (
        "require_image_type_support", {"query_placement_for_image_type_support": False}, {}, {}, "raw", set()),
    # Nova skips a boot from volume (is_bfv); its request carries no disk_format here.
    "test_require_image_type_support_volume_backed": (
        "require_image_type_support", BOTH_OPTIONS, {}, None, "", set()),
    "test_require_image_type_support_unknown": (
        "require_image_type_support", BOTH_OPTIONS, {}, {}, "danformat", set()),
    "test_require_image_type_support_adds_trait": (
        "require_image_type_support", BOTH_OPTIONS, {}, {}, "raw", {"COMPUTE_IMAGE_TYPE_RAW"}),
    "test_transform_image_metadata_x86": transform_image_metadata_case("x86_64", "aarch64"),
    "test_transform_image_metadata_aarch64": transform_image_metadata_case("aarch64", "x86_64"),
    "test_transform_image_metadata__disabled": (
        "transform_image_metadata", {"image_metadata_prefilter": False}, {}, {"hw_disk_bus": "sata"}, "", set()),
    "test_accelerators_filter_with_device_profile": (
        "accelerators_filter", {}, {"accel:device_profile": "mydp"}, None, "", {"COMPUTE_ACCELERATORS"}),
    "test_accelerators_filter_no_device_profile": ("accelerators_filter", {}, {}, None, "", set()),
    "test_virtio_filter_with_packed_ring_in_flavor": (
        "packed_virtqueue_filter", {}, {"hw:virtio_packed_ring": "true"}, {}, "", {"COMPUTE_NET_VIRTIO_PACKED"}),
    "test_virtio_filter_with_packed_ring_in_image": (
        "packed_virtqueue_filter", {}, {}, {"hw_virtio_packed_ring": "true"}, "", {"COMPUTE_NET_VIRTIO_PACKED"}),
    "test_ephemeral_encryption_filter_no_encryption": ("ephemeral_encryption_filter", {}, {}, {}, "", set()),
    "test_ephemeral_encryption_filter_encryption_disabled-image": (
        "ephemeral_encryption_filter", {}, {}, {"hw_ephemeral_encryption": "false"}, "", set()),
    "test_ephemeral_encryption_filter_encryption_disabled-flavor": (
        "ephemeral_encryption_filter", {}, {"hw:ephemeral_encryption": "False"}, {}, "", set()),
    "test_ephemeral_encryption_filter_encryption_no_format": (
        "ephemeral_encryption_filter", {}, {"hw:ephemeral_encryption": "True"}, {}, "",
        {"COMPUTE_EPHEMERAL_ENCRYPTION"}),
    "test_ephemeral_encryption_filter_encryption_and_format": (
        "ephemeral_encryption_filter", {},
        {"hw:ephemeral_encryption": "True", "hw:ephemeral_encryption_format": "luks"}, {}, "",
        {"COMPUTE_EPHEMERAL_ENCRYPTION", "COMPUTE_EPHEMERAL_ENCRYPTION_LUKS"}),
    "test_virtio_sound_filter": (
        "virtio_sound_filter", {}, {"hw:sound_model": "virtio"}, {}, "", {"COMPUTE_SOUND_MODEL_VIRTIO"}),
    "test_tpm_secret_security_filter_skip": ("tpm_secret_security_filter", {}, {}, {}, "", set()),
} | {
    f"test_tpm_secret_security_filter-{source}-{policy}": (
        "tpm_secret_security_filter", {},
        {"hw:tpm_secret_security": policy} | ({"hw:tpm_model": "tpm-tis", "hw:tpm_version": "1.2"}
                                              if source == "flavor" else {}),
        {"hw_tpm_model": "tpm-tis", "hw_tpm_version": "1.2"} if source == "image" else {}, "",
        {f"COMPUTE_SECURITY_TPM_SECRET_SECURITY_{policy.upper()}"})
    for source in ("flavor", "image") for policy in ("user", "host", "deployment")
}

# Beyond Nova's tests; each answer checked against Nova 34's own request filters.
MORE_CASES = {
    # One computed name os-traits lacks turns transform_image_metadata off entirely.
    "viommu-drops-every-trait": (
        "transform_image_metadata", BOTH_OPTIONS, {}, {"hw_viommu_model": "virtio", "hw_disk_bus": "scsi"}, "",
        set()),
    "armv7l-drops-every-trait": (
        "transform_image_metadata", BOTH_OPTIONS, {}, {"hw_architecture": "armv7l", "hw_disk_bus": "scsi"}, "",
        set()),
    "emulation-i686-drops-every-trait": (
        "transform_image_metadata", BOTH_OPTIONS, {}, {"hw_emulation_architecture": "i686"}, "", set()),
    # Typed as ImageMetaProps holds them: legacy names, canonical enums, '-' read as '_'.
    "legacy-architecture-amd64": (
        "transform_image_metadata", BOTH_OPTIONS, {}, {"architecture": "AMD64"}, "", {"HW_ARCH_X86_64"}),
    "legacy-vif-model": (
        "transform_image_metadata", BOTH_OPTIONS, {}, {"hw_vif_model": "virtuale1000"}, "",
        {"COMPUTE_NET_VIF_MODEL_E1000"}),
    "dash-as-underscore": (
        "transform_image_metadata", BOTH_OPTIONS, {}, {"hw_vif_model": "spapr-vlan", "hw_video_model": "none"}, "",
        {"COMPUTE_NET_VIF_MODEL_SPAPR_VLAN", "COMPUTE_GRAPHICS_MODEL_NONE"}),
    "disk-and-cdrom-bus-one-trait": (
        "transform_image_metadata", BOTH_OPTIONS, {}, {"hw_disk_bus": "sata", "hw_cdrom_bus": "sata"}, "",
        {"COMPUTE_STORAGE_BUS_SATA"}),
    "image-type-upper-cased": (
        "require_image_type_support", BOTH_OPTIONS, {}, None, "qcow2", {"COMPUTE_IMAGE_TYPE_QCOW2"}),
    "image-type-off-by-default": ("require_image_type_support", {}, {}, None, "qcow2", set()),
    "packed-ring-image-yes": (
        "packed_virtqueue_filter", {}, {}, {"hw_virtio_packed_ring": "yes"}, "", {"COMPUTE_NET_VIRTIO_PACKED"}),
    # Nova reads the flavor's boolean leniently: anything not true is false.
    "packed-ring-flavor-garbage": ("packed_virtqueue_filter", {}, {"hw:virtio_packed_ring": "garbage"}, {}, "",
                                   set()),
    "ephemeral-encryption-image-luksv2": (
        "ephemeral_encryption_filter", {}, {},
        {"hw_ephemeral_encryption": "true", "hw_ephemeral_encryption_format": "luksv2"}, "",
        {"COMPUTE_EPHEMERAL_ENCRYPTION", "COMPUTE_EPHEMERAL_ENCRYPTION_LUKSV2"}),
    "ephemeral-format-without-encryption": (
        "ephemeral_encryption_filter", {}, {"hw:ephemeral_encryption_format": "luks"}, {}, "", set()),
    "sound-model-not-virtio": ("virtio_sound_filter", {}, {"hw:sound_model": "ich9"}, {}, "", set()),
    "sound-model-empty-flavor-image-virtio": (
        "virtio_sound_filter", {}, {"hw:sound_model": ""}, {"hw_sound_model": "virtio"}, "",
        {"COMPUTE_SOUND_MODEL_VIRTIO"}),
    "tpm-empty-policy-is-user": (
        "tpm_secret_security_filter", {}, {"hw:tpm_secret_security": ""}, {"hw_tpm_version": "2.0"}, "",
        {"COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER"}),
    "tpm-policy-without-vtpm": ("tpm_secret_security_filter", {}, {"hw:tpm_secret_security": "host"}, {}, "",
                                set()),
}


@pytest.mark.parametrize("rule_name, options, extra_specs, properties, disk_format, expected",
                         list(NOVA_TESTS.values()) + list(MORE_CASES.values()),
                         ids=list(NOVA_TESTS) + list(MORE_CASES))
def test_required_traits(rule_name, options, extra_specs, properties, disk_format, expected):
    req = request(extra_specs, properties, disk_format)
    assert_requires(rule_name, req, Profile(**options), expected)


def test_options_default_to_novas():
    profile = Profile()
    assert not profile.query_placement_for_image_type_support and not profile.image_metadata_prefilter


@pytest.mark.parametrize("rule_name, extra_specs, properties, field", [
    # test_tpm_secret_security_filter_fail: Nova's filter raises RequestFilterFailed.
    ("tpm_secret_security_filter", {"hw:tpm_model": "tpm-tis", "hw:tpm_version": "1.2",
                                    "hw:tpm_secret_security": "bogus"}, {},
     "request.flavor.extra_specs[hw:tpm_secret_security]"),
    ("tpm_secret_security_filter", {"hw:tpm_version": "3.0"}, {}, "request.flavor.extra_specs[hw:tpm_version]"),
    ("tpm_secret_security_filter", {"hw:tpm_model": "tpm-crb"}, {"hw_tpm_version": "1.2"},
     "request.flavor.extra_specs[hw:tpm_model]"),
    ("tpm_secret_security_filter", {"hw:tpm_version": "2.0"}, {"hw_tpm_version": "1.2"},
     "request.flavor.extra_specs[hw:tpm_version]"),
    ("virtio_sound_filter", {"hw:sound_model": "virtio"}, {"hw_sound_model": "ich6"},
     "request.flavor.extra_specs[hw:sound_model]"),
    ("virtio_sound_filter", {"hw:sound_model": "beeper"}, {}, "request.flavor.extra_specs[hw:sound_model]"),
    ("packed_virtqueue_filter", {"hw:virtio_packed_ring": "false"}, {"hw_virtio_packed_ring": "true"},
     "request.flavor.extra_specs[hw:virtio_packed_ring]"),
    ("ephemeral_encryption_filter", {"hw:ephemeral_encryption": "true", "hw:ephemeral_encryption_format": "LUKS"},
     {}, "request.flavor.extra_specs[hw:ephemeral_encryption_format]"),
    ("ephemeral_encryption_filter", {"hw:ephemeral_encryption": "false"}, {"hw_ephemeral_encryption": "true"},
     "request.flavor.extra_specs[hw:ephemeral_encryption]"),
    # A value ImageMetaProps refuses refuses the image.
    ("virtio_sound_filter", {}, {"hw_sound_model": "beeper"}, "request.image.properties[hw_sound_model]"),
])
def test_what_nova_refuses_is_an_invalid_field(rule_name, extra_specs, properties, field):
    with pytest.raises(InvalidField) as raised:
        RULES[rule_name].compile(request(extra_specs, properties), build_columns(hosts_around(set())), Profile())
    assert raised.value.field == field


@pytest.mark.parametrize("rule_name, extra_specs, properties, disk_format, host_traits, message", [
    ("transform_image_metadata", {}, {"hw_disk_bus": "scsi"}, "", set(),
     "image hw_disk_bus=scsi needs COMPUTE_STORAGE_BUS_SCSI, which the host lacks"),
    ("transform_image_metadata", {}, {"hw_disk_bus": "sata", "hw_cdrom_bus": "sata", "hw_video_model": "qxl"}, "",
     {"COMPUTE_GRAPHICS_MODEL_QXL"},
     "image hw_cdrom_bus=sata and image hw_disk_bus=sata need COMPUTE_STORAGE_BUS_SATA, which the host lacks"),
    ("require_image_type_support", {}, {}, "qcow2", {"COMPUTE_IMAGE_TYPE_RAW"},
     "image disk_format=qcow2 needs COMPUTE_IMAGE_TYPE_QCOW2, which the host lacks"),
    ("ephemeral_encryption_filter", {"hw:ephemeral_encryption": "yes"}, {"hw_ephemeral_encryption_format": "luks"},
     "", {"COMPUTE_EPHEMERAL_ENCRYPTION"},
     "image hw_ephemeral_encryption_format=luks needs COMPUTE_EPHEMERAL_ENCRYPTION_LUKS, which the host lacks"),
    ("tpm_secret_security_filter", {}, {"hw_tpm_version": "2.0"}, "", set(),
     "a vTPM (image hw_tpm_version=2.0) with the default user needs "
     "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER, which the host lacks"),
    ("packed_virtqueue_filter", {"hw:virtio_packed_ring": "true"}, {}, "", set(),
     "flavor hw:virtio_packed_ring=true needs COMPUTE_NET_VIRTIO_PACKED, which the host lacks"),
])
def test_explanation_names_the_trait_and_its_origin(rule_name, extra_specs, properties, disk_format,
                                                    host_traits, message):
    rule = RULES[rule_name]
    columns = build_columns(Fleet((Host("h", traits=frozenset(host_traits)),)))
    [active] = rule.compile(request(extra_specs, properties, disk_format), columns, Profile(**BOTH_OPTIONS))
    refused, _ = scan(rule, active, columns, 0, 1, 0)
    assert refused.tolist() == [True]
    rejection = rule.explain(active, columns, 0, 0)
    assert (rejection.rule, rejection.reason, rejection.message) == (rule_name, rule.reason, message)


def test_a_trait_no_host_has_refuses_every_host():
    fleet = Fleet((Host("a", traits=frozenset({"COMPUTE_IMAGE_TYPE_RAW"})), Host("b")))
    req = request(properties={}, disk_format="vhdx")
    reference, kernel = verdicts(RULES["require_image_type_support"], fleet, req, Profile(**BOTH_OPTIONS))
    assert reference == kernel == [False, False]


def test_disk_format_crosses_the_contract():
    req = request(properties={"hw_disk_bus": "scsi"}, disk_format="qcow2")
    assert request_from_proto(request_to_proto(req)).image == req.image


# --- kernel == reference on random fleets and requests ---------------------------------------

RELEVANT_TRAITS = ("COMPUTE_IMAGE_TYPE_QCOW2", "COMPUTE_IMAGE_TYPE_RAW", "COMPUTE_STORAGE_BUS_SCSI",
                   "COMPUTE_STORAGE_BUS_SATA", "COMPUTE_GRAPHICS_MODEL_QXL", "HW_ARCH_X86_64", "COMPUTE_ACCELERATORS",
                   "COMPUTE_NET_VIRTIO_PACKED", "COMPUTE_EPHEMERAL_ENCRYPTION", "COMPUTE_EPHEMERAL_ENCRYPTION_LUKS",
                   "COMPUTE_SOUND_MODEL_VIRTIO", "COMPUTE_SECURITY_TPM_SECRET_SECURITY_USER",
                   "COMPUTE_SECURITY_TPM_SECRET_SECURITY_HOST") + tuple(f"CUSTOM_T{i}" for i in range(60))
# Values that agree between flavor and image, so that no draw is a conflict Nova refuses.
FLAVOR_SPECS = {"accel:device_profile": ("dp1", ""), "hw:virtio_packed_ring": ("true", "yes"),
                "hw:ephemeral_encryption": ("true",), "hw:ephemeral_encryption_format": ("luks", "plain"),
                "hw:sound_model": ("virtio", "ich6"), "hw:tpm_secret_security": ("user", "host")}
IMAGE_PROPERTIES = {"hw_disk_bus": ("scsi", "sata"), "hw_cdrom_bus": ("sata",), "hw_video_model": ("qxl",),
                    "architecture": ("x86_64", "AMD64"), "hw_viommu_model": ("virtio",),
                    "hw_virtio_packed_ring": ("true",), "hw_tpm_version": ("2.0", "1.2")}


@st.composite
def trait_scenarios(draw):
    names = draw(st.lists(st.text(alphabet="abc", min_size=1, max_size=3), min_size=1, max_size=10, unique=True))
    fleet = Fleet(tuple(Host(name, traits=frozenset(draw(st.lists(st.sampled_from(RELEVANT_TRAITS), max_size=8))))
                        for name in names))
    specs = draw(st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in FLAVOR_SPECS.items()}))
    properties = draw(st.fixed_dictionaries({}, optional={k: st.sampled_from(v)
                                                          for k, v in IMAGE_PROPERTIES.items()}))
    image = draw(st.one_of(st.none(), st.builds(Image, st.just("img"), st.just(properties),
                                                st.sampled_from(("", "qcow2", "raw", "vhdx", "danformat")))))
    profile = Profile(query_placement_for_image_type_support=draw(st.booleans()),
                      image_metadata_prefilter=draw(st.booleans()))
    return fleet, dataclasses.replace(request(specs), image=image), profile


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trait_scenarios())
def test_kernel_equals_reference(scenario):
    fleet, req, profile = scenario
    columns = as_snapshot(build_columns(fleet))
    for rule in TRAIT_RULES:
        [active] = rule.compile(req, columns, profile)
        expected = [not rule.reference(active.name, host, fleet, req, profile, 0) for host in fleet.hosts]
        if active.params is None:
            assert not any(expected)
            continue
        refused, count = scan(rule, active, columns, 0, columns.host_count, 0)
        assert refused.tolist() == expected and count == sum(expected)
        for row in np.flatnonzero(refused):
            assert rule.explain(active, columns, int(row), 0).message.endswith("which the host lacks")
