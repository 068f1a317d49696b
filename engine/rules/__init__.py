"""Every rule, by name, in evaluation order: Nova's request filters first (in its
ALL_REQUEST_FILTERS order: they shape the Placement query), then Placement's rules (they run as its
allocation-candidates query before Nova's filters), then Nova's filters in the order of
its default enabled_filters, then the rest."""
from __future__ import annotations

from engine.rules.aggregate_image_properties_isolation import AggregateImagePropertiesIsolation
from engine.rules.aggregate_instance_extra_specs import AggregateInstanceExtraSpecsFilter
from engine.rules.aggregate_io_ops import AggregateIoOpsFilter
from engine.rules.aggregate_multitenancy_isolation import AggregateMultiTenancyIsolation
from engine.rules.aggregate_num_instances import AggregateNumInstancesFilter
from engine.rules.accelerators_filter import AcceleratorsFilter
from engine.rules.aggregate_type_affinity import AggregateTypeAffinityFilter
from engine.rules.availability_zone import AvailabilityZone
from engine.rules.base import Rule
from engine.rules.compute_capabilities import ComputeCapabilitiesFilter
from engine.rules.compute_filter import ComputeFilter
from engine.rules.compute_status_filter import ComputeStatusFilter
from engine.rules.different_host import DifferentHostFilter
from engine.rules.ephemeral_encryption_filter import EphemeralEncryptionFilter
from engine.rules.forbidden_traits import ForbiddenTraits
from engine.rules.image_properties import ImagePropertiesFilter
from engine.rules.io_ops import IoOpsFilter
from engine.rules.isolate_aggregates import IsolateAggregates
from engine.rules.isolated_hosts import IsolatedHostsFilter
from engine.rules.json_filter import JsonFilter
from engine.rules.member_of import MemberOf
from engine.rules.metrics_filter import MetricsFilter
from engine.rules.move_source import MoveSource
from engine.rules.num_instances import NumInstancesFilter
from engine.rules.packed_virtqueue_filter import PackedVirtqueueFilter
from engine.rules.require_image_type_support import RequireImageTypeSupport
from engine.rules.require_tenant_aggregate import RequireTenantAggregate
from engine.rules.required_traits import RequiredTraits
from engine.rules.resource import Resource
from engine.rules.same_host import SameHostFilter
from engine.rules.server_group_affinity import ServerGroupAffinityFilter
from engine.rules.server_group_anti_affinity import ServerGroupAntiAffinityFilter
from engine.rules.simple_cidr_affinity import SimpleCIDRAffinityFilter
from engine.rules.tpm_secret_security_filter import TpmSecretSecurityFilter
from engine.rules.transform_image_metadata import TransformImageMetadata
from engine.rules.virtio_sound_filter import VirtioSoundFilter

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
