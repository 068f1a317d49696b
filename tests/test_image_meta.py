"""engine.image_meta against Nova 34's ImageMetaProps.from_dict tests
(nova/tests/unit/objects/test_image_meta.py, TestImageMetaProps; each case's id is Nova's test
name), and the typing the conformance edge cases rely on.

Not ported: the obj_make_compatible_* tests (serialising the object for older Nova versions) and
TestImageMeta's (the image's own fields: name, size, disk_format...), which placecheck does not
hold; and test_get, which exercises ImageMetaProps.get on an object built field by field.
Nova's tests build some properties from Python values (an int, a list, None); Glance hands
Nova strings, and so does placecheck's API, so those values are given as the strings Glance holds.
"""
from __future__ import annotations

import pytest

from placecheck_engine.image_meta import CoercedSet, image_meta_props
from placecheck_engine.model import InvalidField

LEGACY_PROPERTIES = {
    "architecture": "x86_64", "owner_id": "123", "vmware_adaptertype": "lsiLogic",
    "vmware_disktype": "preallocated", "vmware_image_version": "2", "vmware_ostype": "rhel3_64Guest",
    "auto_disk_config": "yes", "ipxe_boot": "yes", "xenapi_device_id": "3",
    "xenapi_image_compression_level": "2", "vmware_linked_clone": "false", "xenapi_use_agent": "yes",
    "xenapi_skip_agent_inject_ssh": "no", "xenapi_skip_agent_inject_files_at_boot": "no",
    "cache_in_nova": "yes", "vm_mode": "hvm", "bittorrent": "yes",
    # Nova's test passes lists; Glance holds these two as JSON, which Nova's Glance client decodes.
    "mappings": "[]", "block_device_mapping": "[]",
    "bdm_v2": "yes", "root_device_name": "/dev/vda", "hypervisor_version_requires": ">=1.5.3",
    "hypervisor_type": "qemu",
}


@pytest.mark.parametrize("properties, expected", [
    pytest.param({"os_type": "windows", "hw_video_model": "vga", "hw_video_ram": "512",
                  "hw_qemu_guest_agent": "yes", "hw_locked_memory": "true", "trait:CUSTOM_TRUSTED": "required"},
                 {"os_type": "windows", "hw_video_model": "vga", "hw_video_ram": 512, "hw_qemu_guest_agent": True,
                  "hw_locked_memory": True, "traits_required": ["CUSTOM_TRUSTED"]},
                 id="test_normal_props"),
    pytest.param({}, {}, id="test_default_props"),
    pytest.param({}, {}, id="test_default_prop_value"),
    # Nova's get() of a name it has no field for raises AttributeError; such a property is dropped.
    pytest.param({"doesnotexist": "x"}, {}, id="test_non_existent_prop"),
    pytest.param({"os_type": "windows"}, {"os_type": "windows"}, id="test_to_dict"),
    pytest.param(LEGACY_PROPERTIES, {
        "hw_architecture": "x86_64", "img_owner_id": "123", "hw_disk_bus": "scsi", "hw_scsi_model": "lsilogic",
        "hw_disk_type": "preallocated", "img_version": 2, "os_distro": "rhel3_64Guest",
        "hw_auto_disk_config": "yes", "hw_ipxe_boot": True, "hw_device_id": 3, "img_compression_level": 2,
        "img_linked_clone": False, "img_use_agent": True, "os_skip_agent_inject_ssh": False,
        "os_skip_agent_inject_files_at_boot": False, "img_cache_in_nova": True, "hw_vm_mode": "hvm",
        "img_bittorrent": True, "img_mappings": [], "img_block_device_mapping": [], "img_bdm_v2": True,
        "img_root_device_name": "/dev/vda", "img_hv_requested_version": ">=1.5.3", "img_hv_type": "qemu",
    }, id="test_legacy_compat"),
    pytest.param({"hw_scsi_model": "virtio-scsi", "vmware_adaptertype": "lsiLogic"},
                 {"hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi"}, id="test_duplicate_legacy_and_normal_props"),
    pytest.param({"hw_numa_nodes": "2", "hw_numa_mem.0": "2048", "hw_numa_mem.1": "4096"},
                 {"hw_numa_nodes": 2, "hw_numa_mem": [2048, 4096]}, id="test_set_numa_mem"),
    pytest.param({"hw_numa_nodes": "2", "hw_numa_mem.0": "2048", "hw_numa_mem.1": "1024", "hw_numa_mem.3": "4096"},
                 {"hw_numa_nodes": 2, "hw_numa_mem": [2048, 1024]}, id="test_set_numa_mem_sparse"),
    pytest.param({"hw_numa_mem.0": "2048", "hw_numa_mem.3": "4096"},
                 {"hw_numa_mem": [2048]}, id="test_set_numa_mem_no_count"),
    pytest.param({"hw_numa_nodes": "2", "hw_numa_cpus.0": "0-3", "hw_numa_cpus.1": "4-7"},
                 {"hw_numa_nodes": 2, "hw_numa_cpus": [{0, 1, 2, 3}, {4, 5, 6, 7}]}, id="test_set_numa_cpus"),
    pytest.param({"hw_numa_nodes": "4", "hw_numa_cpus.0": "0-3", "hw_numa_cpus.1": "4,5", "hw_numa_cpus.3": "6-7"},
                 {"hw_numa_nodes": 4, "hw_numa_cpus": [{0, 1, 2, 3}, {4, 5}]}, id="test_set_numa_cpus_sparse"),
    pytest.param({"hw_numa_cpus.0": "0-3", "hw_numa_cpus.3": "4-7"},
                 {"hw_numa_cpus": [{0, 1, 2, 3}]}, id="test_set_numa_cpus_no_count"),
    pytest.param({"hw_locked_memory": "true"}, {"hw_locked_memory": True}, id="test_locked_memory_prop"),
    pytest.param({"trait:HW_CPU_X86_AVX2": "required", "trait:CUSTOM_TRUSTED": "required",
                  "trait1:CUSTOM_FPGA": "required", "trai:CUSTOM_FOO": "required", "trait:CUSTOM_XYZ": "xyz"},
                 {"traits_required": ["HW_CPU_X86_AVX2", "CUSTOM_TRUSTED"]}, id="test_get_unnumbered_trait_fields"),
    pytest.param({"trait:HW_CPU_X86_AVX2": "required", "trait:CUSTOM_TRUSTED": "required", "traits_required": "foo"},
                 {"traits_required": ["HW_CPU_X86_AVX2", "CUSTOM_TRUSTED"]},
                 id="test_traits_required_initialized_as_list"),
    pytest.param({"os_secure_boot": "required"}, {"os_secure_boot": "required"}, id="test_set_os_secure_boot"),
    pytest.param({"hw_maxphysaddr_mode": "passthrough"}, {"hw_maxphysaddr_mode": "passthrough"},
                 id="test_set_hw_maxphysaddr_mode"),
    pytest.param({"hw_maxphysaddr_bits": "42"}, {"hw_maxphysaddr_bits": 42}, id="test_set_hw_maxphysaddr_bits"),
])
def test_from_dict_nova_table(properties, expected):
    assert image_meta_props(properties) == expected


# Nova's test passes None too, which a string map cannot hold; "" is likewise not set.
@pytest.mark.parametrize("adapter_type, expected", [
    ("lsiLogic", {"hw_disk_bus": "scsi", "hw_scsi_model": "lsilogic"}),
    ("busLogic", {"hw_disk_bus": "scsi", "hw_scsi_model": "buslogic"}),
    ("ide", {"hw_disk_bus": "ide"}),
    ("lsiLogicsas", {"hw_disk_bus": "scsi", "hw_scsi_model": "lsisas1068"}),
    ("paraVirtual", {"hw_disk_bus": "scsi", "hw_scsi_model": "vmpvscsi"}),
    ("", {}),
], ids=lambda value: value if isinstance(value, str) else "")
def test_legacy_compat_vmware_adapter_types(adapter_type, expected):
    assert image_meta_props({"vmware_adaptertype": adapter_type}) == expected


def test_set_hw_maxphysaddr_mode_negative():
    with pytest.raises(InvalidField) as raised:
        image_meta_props({"hw_maxphysaddr_mode": "blah"})
    assert raised.value.field == "request.image.properties[hw_maxphysaddr_mode]"


# --- what the filters compare: typed values, legacy names, refusals ------------------------

@pytest.mark.parametrize("properties, expected", [
    ({"hw_architecture": "AMD64"}, {"hw_architecture": "x86_64"}),
    ({"architecture": "i386"}, {"hw_architecture": "i686"}),
    ({"img_hv_type": "QEMU", "hw_vm_mode": "PV"}, {"img_hv_type": "qemu", "hw_vm_mode": "xen"}),
    ({"hypervisor_type": "xapi", "vm_mode": "baremetal"}, {"img_hv_type": "xen", "hw_vm_mode": "hvm"}),
    # The current name wins over the legacy one.
    ({"architecture": "aarch64", "hw_architecture": "x86_64"}, {"hw_architecture": "x86_64"}),
    ({"hypervisor_version_requires": ">=6.0"}, {"img_hv_requested_version": ">=6.0"}),
    # bool_from_string: anything but a true word is False, never an error.
    ({"hw_qemu_guest_agent": "yes", "hw_pmu": "maybe", "hw_boot_menu": " On "},
     {"hw_qemu_guest_agent": True, "hw_pmu": False, "hw_boot_menu": True}),
    # int(): spaces and digit separators are accepted.
    ({"hw_cpu_cores": "04", "hw_cpu_sockets": " 3", "hw_cpu_threads": "1_0"},
     {"hw_cpu_cores": 4, "hw_cpu_sockets": 3, "hw_cpu_threads": 10}),
    ({"os_type": "Linux", "hw_vif_model": "VirtualE1000"}, {"os_type": "linux", "hw_vif_model": "e1000"}),
    ({"os_distro": "ubuntu", "foo": "bar", "hw_numa_mem": "1"}, {"os_distro": "ubuntu"}),
    ({"hw_numa_cpus.0": "0-3,^2,6"}, {"hw_numa_cpus": [{0, 1, 3, 6}]}),
    ({"block_device_mapping": '[{"boot_index": 0, "volume_id": null}]'},
     {"img_block_device_mapping": [{"boot_index": "0", "volume_id": None}]}),
])
def test_values_are_typed_as_nova_types_them(properties, expected):
    assert image_meta_props(properties) == expected


def test_str_of_typed_values_reads_as_novas():
    typed = image_meta_props({"hw_qemu_guest_agent": "yes", "hw_cpu_cores": "04", "hw_numa_cpus.0": "0-1",
                              "trait:A": "required"})
    assert {name: str(value) for name, value in typed.items()} == {
        "hw_qemu_guest_agent": "True", "hw_cpu_cores": "4", "hw_numa_cpus": "[CoercedSet({0, 1})]",
        "traits_required": "['A']"}
    assert isinstance(typed["hw_numa_cpus"][0], CoercedSet)


@pytest.mark.parametrize("properties, refused", [
    ({"hw_architecture": "sparc128"}, "hw_architecture"),
    ({"img_hv_type": "kvm2"}, "img_hv_type"),
    ({"hw_vm_mode": "pvh"}, "hw_vm_mode"),
    ({"hw_cpu_cores": "3.0"}, "hw_cpu_cores"),
    ({"img_hv_requested_version": "~=6.0"}, "img_hv_requested_version"),
    # The exact-valued enums are case-sensitive.
    ({"hw_disk_bus": "VIRTIO"}, "hw_disk_bus"),
    # A legacy value is set, and refused, before the current name would replace it.
    ({"architecture": "bogus", "hw_architecture": "x86_64"}, "architecture"),
    ({"vmware_adaptertype": "bogus"}, "vmware_adaptertype"),
    ({"hw_numa_mem.0": "1024", "hw_numa_mem.1": "lots"}, "hw_numa_mem.1"),
    ({"hw_numa_cpus.0": "3-1"}, "hw_numa_cpus.0"),
    ({"img_mappings": "[]"}, "img_mappings"),  # only the legacy name is JSON-decoded
    ({"mappings": "not json"}, "mappings"),
])
def test_a_value_nova_refuses_is_an_invalid_field(properties, refused):
    with pytest.raises(InvalidField) as raised:
        image_meta_props(properties, path="request.image.properties")
    assert raised.value.field == f"request.image.properties[{refused}]"


def test_results_are_the_callers_to_change():
    properties = {"os_distro": "ubuntu"}
    image_meta_props(properties)["os_distro"] = "changed"
    assert image_meta_props(properties) == {"os_distro": "ubuntu"}
