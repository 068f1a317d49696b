"""Every rule, by name, in evaluation order: Nova's request filters first (in its
ALL_REQUEST_FILTERS order: they shape the Placement query), then Placement's rules (they run as its
allocation-candidates query before Nova's filters), then Nova's filters in the order of
its default enabled_filters, then the rest."""
from __future__ import annotations

from placecheck_engine.rules.aggregate_image_properties_isolation import AggregateImagePropertiesIsolation
from placecheck_engine.rules.aggregate_instance_extra_specs import AggregateInstanceExtraSpecsFilter
from placecheck_engine.rules.aggregate_io_ops import AggregateIoOpsFilter
from placecheck_engine.rules.aggregate_multitenancy_isolation import AggregateMultiTenancyIsolation
from placecheck_engine.rules.aggregate_num_instances import AggregateNumInstancesFilter
from placecheck_engine.rules.accelerators_filter import AcceleratorsFilter
from placecheck_engine.rules.aggregate_type_affinity import AggregateTypeAffinityFilter
from placecheck_engine.rules.availability_zone import AvailabilityZone
from placecheck_engine.rules.base import Rule
from placecheck_engine.rules.compute_capabilities import ComputeCapabilitiesFilter
from placecheck_engine.rules.compute_filter import ComputeFilter
from placecheck_engine.rules.compute_status_filter import ComputeStatusFilter
from placecheck_engine.rules.different_host import DifferentHostFilter
from placecheck_engine.rules.ephemeral_encryption_filter import EphemeralEncryptionFilter
from placecheck_engine.rules.forbidden_traits import ForbiddenTraits
from placecheck_engine.rules.image_properties import ImagePropertiesFilter
from placecheck_engine.rules.io_ops import IoOpsFilter
from placecheck_engine.rules.isolate_aggregates import IsolateAggregates
from placecheck_engine.rules.isolated_hosts import IsolatedHostsFilter
from placecheck_engine.rules.json_filter import JsonFilter
from placecheck_engine.rules.member_of import MemberOf
from placecheck_engine.rules.metrics_filter import MetricsFilter
from placecheck_engine.rules.move_source import MoveSource
from placecheck_engine.rules.num_instances import NumInstancesFilter
from placecheck_engine.rules.numa_topology_filter import NUMATopologyFilter
from placecheck_engine.rules.packed_virtqueue_filter import PackedVirtqueueFilter
from placecheck_engine.rules.pci_passthrough_filter import PciPassthroughFilter
from placecheck_engine.rules.require_image_type_support import RequireImageTypeSupport
from placecheck_engine.rules.require_tenant_aggregate import RequireTenantAggregate
from placecheck_engine.rules.required_traits import RequiredTraits
from placecheck_engine.rules.resource import Resource
from placecheck_engine.rules.same_host import SameHostFilter
from placecheck_engine.rules.server_group_affinity import ServerGroupAffinityFilter
from placecheck_engine.rules.server_group_anti_affinity import ServerGroupAntiAffinityFilter
from placecheck_engine.rules.simple_cidr_affinity import SimpleCIDRAffinityFilter
from placecheck_engine.rules.tpm_secret_security_filter import TpmSecretSecurityFilter
from placecheck_engine.rules.transform_image_metadata import TransformImageMetadata
from placecheck_engine.rules.virtio_sound_filter import VirtioSoundFilter

RULES: dict[str, Rule] = {rule.name: rule for rule in (
    RequireTenantAggregate(),
    RequireImageTypeSupport(),
    ComputeStatusFilter(),
    IsolateAggregates(),
    TransformImageMetadata(),
    AcceleratorsFilter(),
    PackedVirtqueueFilter(),
    EphemeralEncryptionFilter(),
    VirtioSoundFilter(),
    TpmSecretSecurityFilter(),
    Resource(),
    RequiredTraits(),
    ForbiddenTraits(),
    MemberOf(),
    AvailabilityZone(),
    MoveSource(),
    ComputeFilter(),
    ComputeCapabilitiesFilter(),
    ImagePropertiesFilter(),
    ServerGroupAntiAffinityFilter(),
    ServerGroupAffinityFilter(),
    NUMATopologyFilter(),
    PciPassthroughFilter(),
    SameHostFilter(),
    DifferentHostFilter(),
    SimpleCIDRAffinityFilter(),
    AggregateInstanceExtraSpecsFilter(),
    AggregateMultiTenancyIsolation(),
    AggregateImagePropertiesIsolation(),
    AggregateTypeAffinityFilter(),
    IoOpsFilter(),
    AggregateIoOpsFilter(),
    NumInstancesFilter(),
    AggregateNumInstancesFilter(),
    IsolatedHostsFilter(),
    MetricsFilter(),
    JsonFilter(),
)}


def rule_names() -> list[str]:
    return list(RULES)
