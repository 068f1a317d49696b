"""docs/configuration.md's option table is generated from engine.config.Profile, so it cannot drift.

Names, types, defaults and minimums come from engine.config; the nova.conf origin, the rules or
weighers that read each option and what it does come from OPTION_DOCS below, which must
cover every field. After changing either, refresh the table with

    .venv/bin/python tests/test_config_doc.py
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

from placecheck_engine.config import _OPTION_MINIMUMS, Profile

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BEGIN = "<!-- options: generated from engine.config.Profile by tests/test_config_doc.py -->"
END = "<!-- end of options -->"
# Profile fields that are not options of the file.
NOT_OPTIONS = ("name", "extra")


class OptionDoc(NamedTuple):
    nova: str  # where nova.conf holds it
    read_by: str  # Nova's filters / weighers (or the selection step) that read it
    effect: str


FILTER_SCHEDULER = "[filter_scheduler]"
METRICS = "[metrics]"

OPTION_DOCS: dict[str, OptionDoc] = {
    "enabled_filters": OptionDoc(
        f"{FILTER_SCHEDULER} enabled_filters", "the decision itself",
        "Rules to run, in this order. `resource` stands for Placement's capacity rule (one "
        "`resource:CLASS` per requested class); the others are named as Nova names them. Unknown names "
        "are refused. Left out: every rule this build implements, in evaluation order."),
    "max_io_ops_per_host": OptionDoc(
        f"{FILTER_SCHEDULER} max_io_ops_per_host", "IoOpsFilter; AggregateIoOpsFilter's fallback",
        "A host passes while its `num_io_ops` is below this."),
    "max_instances_per_host": OptionDoc(
        f"{FILTER_SCHEDULER} max_instances_per_host", "NumInstancesFilter; AggregateNumInstancesFilter's fallback",
        "A host passes while its `num_instances` is below this."),
    "allow_resize_to_same_host": OptionDoc(
        "[DEFAULT] allow_resize_to_same_host", "MoveSource",
        "Whether a resize may land on the host it starts from."),
    "isolated_hosts": OptionDoc(
        f"{FILTER_SCHEDULER} isolated_hosts", "IsolatedHostsFilter",
        "Hosts reserved for the isolated images."),
    "isolated_images": OptionDoc(
        f"{FILTER_SCHEDULER} isolated_images", "IsolatedHostsFilter",
        "Image ids that may run only on the isolated hosts."),
    "restrict_isolated_hosts_to_isolated_images": OptionDoc(
        f"{FILTER_SCHEDULER} restrict_isolated_hosts_to_isolated_images", "IsolatedHostsFilter",
        "Whether the isolated hosts refuse every other image."),
    "aggregate_image_properties_isolation_namespace": OptionDoc(
        f"{FILTER_SCHEDULER} aggregate_image_properties_isolation_namespace",
        "AggregateImagePropertiesIsolation",
        "Only aggregate metadata keys under this namespace are compared with image properties "
        "(empty: every key)."),
    "aggregate_image_properties_isolation_separator": OptionDoc(
        f"{FILTER_SCHEDULER} aggregate_image_properties_isolation_separator",
        "AggregateImagePropertiesIsolation", "Separator between the namespace and the key."),
    "image_properties_default_architecture": OptionDoc(
        f"{FILTER_SCHEDULER} image_properties_default_architecture", "ImagePropertiesFilter",
        "Architecture assumed for an image without `hw_architecture` (empty: none)."),
    "metrics_weight_setting": OptionDoc(
        f"{METRICS} weight_setting", "MetricsFilter, MetricsWeigher",
        "`name=ratio` entries: the metrics a host must report, and their weight."),
    "metrics_required": OptionDoc(
        f"{METRICS} required", "MetricsWeigher",
        "Whether a host lacking a configured metric fails the weighing, rather than weighing "
        "`metrics_weight_of_unavailable`."),
    "metrics_weight_of_unavailable": OptionDoc(
        f"{METRICS} weight_of_unavailable", "MetricsWeigher",
        "The weight of a host lacking a metric when `metrics_required` is false."),
    "ram_weight_multiplier": OptionDoc(
        f"{FILTER_SCHEDULER} ram_weight_multiplier", "RAMWeigher",
        "Free RAM: positive spreads, negative packs."),
    "cpu_weight_multiplier": OptionDoc(
        f"{FILTER_SCHEDULER} cpu_weight_multiplier", "CPUWeigher",
        "Free vCPUs (total x allocation ratio - used): positive spreads, negative packs."),
    "disk_weight_multiplier": OptionDoc(
        f"{FILTER_SCHEDULER} disk_weight_multiplier", "DiskWeigher",
        "Free disk: positive spreads, negative packs."),
    "io_ops_weight_multiplier": OptionDoc(
        f"{FILTER_SCHEDULER} io_ops_weight_multiplier", "IoOpsWeigher",
        "Concurrent I/O operations: negative prefers idle hosts."),
    "num_instances_weight_multiplier": OptionDoc(
        f"{FILTER_SCHEDULER} num_instances_weight_multiplier", "NumInstancesWeigher",
        "Instances on the host: positive packs, negative spreads."),
    "hypervisor_version_weight_multiplier": OptionDoc(
        f"{FILTER_SCHEDULER} hypervisor_version_weight_multiplier", "HypervisorVersionWeigher",
        "Hypervisor version: positive prefers newer hypervisors."),
    "soft_affinity_weight_multiplier": OptionDoc(
        f"{FILTER_SCHEDULER} soft_affinity_weight_multiplier", "ServerGroupSoftAffinityWeigher",
        "Members of the request's soft-affinity group on the host."),
    "soft_anti_affinity_weight_multiplier": OptionDoc(
        f"{FILTER_SCHEDULER} soft_anti_affinity_weight_multiplier", "ServerGroupSoftAntiAffinityWeigher",
        "Members of the request's soft-anti-affinity group on the host, counted against it."),
    "build_failure_weight_multiplier": OptionDoc(
        f"{FILTER_SCHEDULER} build_failure_weight_multiplier", "BuildFailureWeigher",
        "Recent failed builds on the host, counted against it."),
    "metrics_weight_multiplier": OptionDoc(
        f"{METRICS} weight_multiplier", "MetricsWeigher",
        "The weighted sum of `metrics_weight_setting`."),
    "host_subset_size": OptionDoc(
        f"{FILTER_SCHEDULER} host_subset_size", "selection",
        "Each instance goes to a host chosen among this many best, seeded by the decision id."),
    "shuffle_best_same_weighed_hosts": OptionDoc(
        f"{FILTER_SCHEDULER} shuffle_best_same_weighed_hosts", "selection",
        "Whether the hosts tied at the best weight are shuffled before choosing."),
    "max_attempts": OptionDoc(
        "[scheduler] max_attempts", "selection",
        "Alternates offered per instance: `max_attempts - 1` (a request's `max_alternates` overrides)."),
    "limit_tenants_to_placement_aggregate": OptionDoc(
        "[scheduler] limit_tenants_to_placement_aggregate", "require_tenant_aggregate",
        "A project named by aggregates (a `filter_tenant_id*` key whose value is the project) goes "
        "only to their hosts."),
    "placement_aggregate_required_for_tenants": OptionDoc(
        "[scheduler] placement_aggregate_required_for_tenants", "require_tenant_aggregate",
        "With `limit_tenants_to_placement_aggregate`: a project no aggregate names goes nowhere "
        "(otherwise anywhere)."),
    "enable_isolated_aggregate_filtering": OptionDoc(
        "[scheduler] enable_isolated_aggregate_filtering", "isolate_aggregates",
        "An aggregate with `trait:NAME=required` metadata keeps out requests that do not require NAME."),
    "query_placement_for_image_type_support": OptionDoc(
        "[scheduler] query_placement_for_image_type_support", "require_image_type_support",
        "An image's `disk_format` requires the trait `COMPUTE_IMAGE_TYPE_<DISK_FORMAT>`."),
    "image_metadata_prefilter": OptionDoc(
        "[scheduler] image_metadata_prefilter", "transform_image_metadata",
        "Image properties `hw_cdrom_bus`, `hw_disk_bus`, `hw_video_model`, `hw_vif_model`, `hw_architecture`, "
        "`hw_emulation_architecture` and `hw_viommu_model` require the `COMPUTE_*` / `HW_ARCH_*` traits they name."),
    "pci_alias": OptionDoc(
        "[pci] alias", "NUMATopologyFilter, PciPassthroughFilter",
        "One JSON object per alias (`name`, `vendor_id`, `product_id`, `device_type`, `numa_policy`), as in "
        "nova.conf; a flavor's `pci_passthrough:alias` = `NAME:COUNT` asks for that many of its devices."),
    "cpu_allocation_ratio": OptionDoc(
        "[DEFAULT] initial_cpu_allocation_ratio", "NUMATopologyFilter",
        "The shared-CPU NUMA limit (`len(cpuset) * ratio`) of a host whose fleet entry gives neither "
        "`cpu_allocation_ratio` nor a VCPU inventory."),
    "ram_allocation_ratio": OptionDoc(
        "[DEFAULT] initial_ram_allocation_ratio", "NUMATopologyFilter",
        "The NUMA memory limit (`memory * ratio`) for shared-CPU guests on a host whose fleet entry gives "
        "neither `ram_allocation_ratio` nor a MEMORY_MB inventory."),
    "packing_host_numa_cells_allocation_strategy": OptionDoc(
        "[compute] packing_host_numa_cells_allocation_strategy", "NUMATopologyFilter",
        "Try the host's most used NUMA cells first (packing) instead of its least used (spreading)."),
    "pci_weight_multiplier": OptionDoc(
        "[filter_scheduler] pci_weight_multiplier", "PCIWeigher",
        "Weighs `100 - min(free PCI devices, 99)`: positive, hosts with fewer free devices rank higher, so "
        "requests without PCI devices avoid PCI hosts and PCI requests stack on the hosts with fewest."),
}

_TYPE_NAMES = {"int": "integer", "float": "number", "bool": "true / false", "str": "string",
               "tuple[str, ...]": "list of strings"}


def option_fields() -> list[dataclasses.Field]:
    return [field for field in dataclasses.fields(Profile) if field.name not in NOT_OPTIONS]


def _default(field: dataclasses.Field) -> str:
    if field.name == "enabled_filters":
        return "every implemented rule"
    default = f"`{json.dumps(list(field.default) if isinstance(field.default, tuple) else field.default)}`"
    return f"{default} (min {_OPTION_MINIMUMS[field.name]})" if field.name in _OPTION_MINIMUMS else default


def options_table() -> str:
    """The option table, one row per Profile option, in Profile's order."""
    rows = ["| option | nova.conf | type | default | read by | effect |", "|---|---|---|---|---|---|"]
    for field in option_fields():
        doc = OPTION_DOCS[field.name]
        rows.append(f"| `{field.name}` | `{doc.nova}` | {_TYPE_NAMES[field.type]} | {_default(field)} "
                    f"| {doc.read_by} | {doc.effect} |")
    return "\n".join(rows)


def generated_section() -> str:
    return f"{BEGIN}\n{options_table()}\n{END}"


def _documented_section(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def test_every_profile_option_has_its_origin_reader_and_effect():
    assert set(OPTION_DOCS) == {field.name for field in option_fields()}


def test_the_documented_options_are_the_generated_ones():
    documented = _documented_section(DOC.read_text())
    assert documented == generated_section(), "refresh with: .venv/bin/python tests/test_config_doc.py"
    for field in option_fields():
        assert f"| `{field.name}` |" in documented


if __name__ == "__main__":
    text = DOC.read_text()
    DOC.write_text(text.replace(_documented_section(text), generated_section()))
