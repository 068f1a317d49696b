"""An image's properties as Nova 34 holds them: ImageMetaProps.from_dict (nova/objects/image_meta.py).

Glance hands Nova an image's properties as strings. from_dict sets Glance's legacy names first
(`architecture` -> hw_architecture, ...), then the current names, which so win when both are
given, then collects `trait:NAME=required` into traits_required. Each value is coerced to its
field's type as it is set: booleans as oslo's bool_from_string reads them, integers by int(),
enums canonicalised or validated, img_hv_requested_version parsed. A value Nova refuses, even a
legacy one a current name would have replaced, refuses the image: InvalidField naming it. Names
ImageMetaProps has no field for are dropped. This is the one place properties are typed; every
rule reading an image property reads image_meta_props().
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import lru_cache

from placecheck_engine import nova_fields as nf
from placecheck_engine.model import InvalidField

IMAGE_PROPERTIES_PATH = "request.image.properties"


class CoercedSet(frozenset):
    """A set of CPUs of hw_numa_cpus; named as oslo's CoercedSet so that str() reads as Nova's."""


def _string(value: str) -> str:
    return value


def _list_of_dicts_of_nullable_strings(value) -> list[dict[str, str | None]]:
    """ListOfDictOfNullableStringsField: a string is refused (only a decoded JSON list fits)."""
    if not isinstance(value, list):
        raise ValueError(f"a list is required, not a {type(value).__name__}")
    coerced = []
    for item in value:
        if not isinstance(item, dict):
            raise ValueError(f"a dict is required, not a {type(item).__name__}")
        for element in item.values():
            if element is not None and not isinstance(element, (str, int, float)):
                raise ValueError(f"a string is required, not a {type(element).__name__}")
        coerced.append({str(key): None if element is None else str(element) for key, element in item.items()})
    return coerced


def _cpu_set(spec: str) -> CoercedSet:
    """nova.virt.hardware.parse_cpu_spec: "0-3,^2,6" -> {0, 1, 3, 6}."""
    included, excluded = set(), set()
    for rule in spec.split(","):
        rule = rule.strip()
        if not rule:
            continue
        bounds = rule.split("-", 1)
        if len(bounds) > 1:
            target = excluded if bounds[0].startswith("^") else included
            try:
                start, end = int(bounds[0].removeprefix("^").strip()), int(bounds[1].strip())
            except ValueError:
                raise ValueError(f"invalid range expression {rule!r}") from None
            if start > end:
                raise ValueError(f"invalid range expression {rule!r}")
            target.update(range(start, end + 1))
        elif rule.startswith("^"):
            excluded.add(int(rule[1:].strip()))
        else:
            included.add(int(rule))
    return CoercedSet(included - excluded)


_BOOLEAN, _INTEGER, _UUID = nf.flexible_boolean, nf.integer, _string
# ImageMetaProps.fields in Nova's order (the order it sets them, so the first refusal is Nova's),
# each with how it coerces a string. hw_numa_cpus / hw_numa_mem are read from numbered names, and
# traits_required from trait: names, never from a property of their own name.
FIELDS: dict[str, Callable[[str], object]] = {
    "hw_architecture": nf.ARCHITECTURE.coerce, "hw_emulation_architecture": nf.ARCHITECTURE.coerce,
    "hw_auto_disk_config": _string, "hw_boot_menu": _BOOLEAN, "hw_cdrom_bus": nf.DISK_BUS.coerce,
    "hw_cpu_cores": _INTEGER, "hw_cpu_sockets": _INTEGER, "hw_cpu_max_cores": _INTEGER,
    "hw_cpu_max_sockets": _INTEGER, "hw_cpu_max_threads": _INTEGER,
    "hw_cpu_policy": nf.CPU_ALLOCATION_POLICY.coerce, "hw_cpu_thread_policy": nf.CPU_THREAD_ALLOCATION_POLICY.coerce,
    "hw_cpu_realtime_mask": _string, "hw_cpu_threads": _INTEGER, "hw_device_id": _INTEGER,
    "hw_disk_bus": nf.DISK_BUS.coerce, "hw_disk_type": _string, "hw_floppy_bus": nf.DISK_BUS.coerce,
    "hw_firmware_type": nf.FIRMWARE_TYPE.coerce, "hw_firmware_stateless": _BOOLEAN,
    "hw_input_bus": nf.INPUT_BUS.coerce, "hw_ipxe_boot": _BOOLEAN, "hw_locked_memory": _BOOLEAN,
    "hw_machine_type": _string, "hw_mem_encryption": _BOOLEAN,
    "hw_mem_encryption_model": nf.MEM_ENCRYPTION_MODEL.coerce, "hw_mem_page_size": _string,
    "hw_numa_nodes": _INTEGER, "hw_numa_cpus": _cpu_set, "hw_numa_mem": _INTEGER,
    "hw_pci_numa_affinity_policy": nf.PCI_NUMA_AFFINITY_POLICY.coerce, "hw_pointer_model": nf.POINTER_MODEL.coerce,
    "hw_pmu": _BOOLEAN, "hw_qemu_guest_agent": _BOOLEAN, "hw_rescue_bus": nf.DISK_BUS.coerce,
    "hw_rescue_device": nf.BLOCK_DEVICE_TYPE.coerce, "hw_rng_model": nf.RNG_MODEL.coerce,
    "hw_time_hpet": _BOOLEAN, "hw_serial_port_count": _INTEGER, "hw_scsi_model": nf.SCSI_MODEL.coerce,
    "hw_video_model": nf.VIDEO_MODEL.coerce, "hw_video_ram": _INTEGER, "hw_vif_model": nf.VIF_MODEL.coerce,
    "hw_viommu_model": nf.VIOMMU_MODEL.coerce, "hw_vm_mode": nf.VM_MODE.coerce,
    "hw_watchdog_action": nf.WATCHDOG_ACTION.coerce, "hw_vif_multiqueue_enabled": _BOOLEAN,
    "hw_tpm_model": nf.TPM_MODEL.coerce, "hw_tpm_version": nf.TPM_VERSION.coerce,
    "hw_ephemeral_encryption": _BOOLEAN,
    "hw_ephemeral_encryption_format": nf.BLOCK_DEVICE_ENCRYPTION_FORMAT.coerce,
    "hw_ephemeral_encryption_secret_uuid": _UUID,  # oslo only warns about a malformed UUID
    "hw_virtio_packed_ring": _BOOLEAN, "hw_maxphysaddr_mode": nf.MAX_PHYS_ADDR_MODE.coerce,
    "hw_maxphysaddr_bits": _INTEGER, "hw_sound_model": nf.SOUND_MODEL.coerce,
    "hw_usb_model": nf.USB_CONTROLLER_MODEL.coerce, "hw_redirected_usb_ports": _INTEGER,
    "img_bittorrent": _BOOLEAN, "img_bdm_v2": _BOOLEAN,
    "img_block_device_mapping": _list_of_dicts_of_nullable_strings, "img_cache_in_nova": _BOOLEAN,
    "img_compression_level": _INTEGER, "img_hv_requested_version": nf.version_predicate,
    "img_hv_type": nf.HYPERVISOR_TYPE.coerce, "img_config_drive": nf.CONFIG_DRIVE_POLICY.coerce,
    "img_linked_clone": _BOOLEAN, "img_mappings": _list_of_dicts_of_nullable_strings,
    "img_owner_id": _string, "img_root_device_name": _string, "img_use_agent": _BOOLEAN,
    "img_version": _INTEGER, "img_signature": _string,
    "img_signature_hash_method": nf.IMAGE_SIGNATURE_HASH_TYPE.coerce, "img_signature_certificate_uuid": _UUID,
    "img_signature_key_type": nf.IMAGE_SIGNATURE_KEY_TYPE.coerce, "img_hide_hypervisor_id": _BOOLEAN,
    "os_admin_user": _string, "os_command_line": _string, "os_distro": _string,
    "os_require_quiesce": _BOOLEAN, "os_secure_boot": nf.SECURE_BOOT.coerce,
    "os_skip_agent_inject_files_at_boot": _BOOLEAN, "os_skip_agent_inject_ssh": _BOOLEAN,
    "os_type": nf.OS_TYPE.coerce,
}
NUMBERED_FIELDS = ("hw_numa_cpus", "hw_numa_mem")  # hw_numa_mem.0, hw_numa_mem.1, ... up to the first gap
NUMA_NODES_MAX = 128  # ImageMetaProps.NUMA_NODES_MAX: numbered names read at most
# Glance's legacy names -> current names (ImageMetaProps._legacy_property_map), in Nova's order.
LEGACY_NAMES = {
    "architecture": "hw_architecture", "owner_id": "img_owner_id", "vmware_disktype": "hw_disk_type",
    "vmware_image_version": "img_version", "vmware_ostype": "os_distro", "auto_disk_config": "hw_auto_disk_config",
    "ipxe_boot": "hw_ipxe_boot", "xenapi_device_id": "hw_device_id",
    "xenapi_image_compression_level": "img_compression_level", "vmware_linked_clone": "img_linked_clone",
    "xenapi_use_agent": "img_use_agent", "xenapi_skip_agent_inject_ssh": "os_skip_agent_inject_ssh",
    "xenapi_skip_agent_inject_files_at_boot": "os_skip_agent_inject_files_at_boot",
    "cache_in_nova": "img_cache_in_nova", "vm_mode": "hw_vm_mode", "bittorrent": "img_bittorrent",
    "mappings": "img_mappings", "block_device_mapping": "img_block_device_mapping", "bdm_v2": "img_bdm_v2",
    "root_device_name": "img_root_device_name", "hypervisor_version_requires": "img_hv_requested_version",
    "hypervisor_type": "img_hv_type"}
# Nova's Glance client JSON-decodes these two legacy properties before from_dict sees them.
JSON_LEGACY_NAMES = frozenset(("mappings", "block_device_mapping"))
VMWARE_ADAPTER_TYPE = "vmware_adaptertype"  # legacy: "ide" -> hw_disk_bus, else a SCSI model
TRAIT_PREFIX = "trait:"


def image_meta_props(properties: Mapping[str, str], path: str = IMAGE_PROPERTIES_PATH) -> dict[str, object]:
    """The properties ImageMetaProps.from_dict sets, by current name, with Nova's typed values."""
    # Keyed in the caller's order: traits_required lists the trait: names in that order.
    return dict(_typed(tuple(properties.items()), path))


@lru_cache(maxsize=1024)
def _typed(items: tuple[tuple[str, str], ...], path: str) -> dict[str, object]:
    properties = dict(items)
    typed: dict[str, object] = {}

    def coerce(name: str, field: str, value) -> object:
        try:
            return FIELDS[field](value)
        except ValueError as error:
            raise InvalidField(f"{path}[{name}]", f"{value!r} is refused by Nova's {field}: {error}") from None

    for legacy, field in LEGACY_NAMES.items():
        if legacy in properties:
            value = properties[legacy]
            if legacy in JSON_LEGACY_NAMES:
                try:
                    value = json.loads(value)
                except ValueError as error:
                    raise InvalidField(f"{path}[{legacy}]", f"not JSON: {error}") from None
            typed[field] = coerce(legacy, field, value)
    adapter = properties.get(VMWARE_ADAPTER_TYPE)
    if adapter == "ide":
        typed["hw_disk_bus"] = "ide"
    elif adapter:
        typed["hw_disk_bus"] = "scsi"
        typed["hw_scsi_model"] = coerce(VMWARE_ADAPTER_TYPE, "hw_scsi_model", adapter)
    for field in FIELDS:
        if field in NUMBERED_FIELDS:
            numbered = []
            for cell in range(NUMA_NODES_MAX):
                name = f"{field}.{cell}"
                if name not in properties:
                    break
                numbered.append(coerce(name, field, properties[name]))
            if numbered:
                typed[field] = numbered
        elif field in properties:
            typed[field] = coerce(field, field, properties[field])
    traits = [name[len(TRAIT_PREFIX):] for name, value in properties.items()
              if name.startswith(TRAIT_PREFIX) and value == "required"]
    if traits:
        typed["traits_required"] = traits
    return typed
