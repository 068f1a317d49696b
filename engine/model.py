"""The fleet and the request as plain Python values.

These mirror proto/placecheck/v1 without depending on it: the server converts
messages to these, the fleet file loader builds them from JSON, and the
reference predicates read them directly. Defaults are Nova's and Placement's.
"""
from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field

from placecheck_engine.nova_fields import HV_SPEC_FIELDS, canonical_hv_spec

# Placement's largest inventory value and allocation amount (its API's `maximum`, db MAX_INT);
# also its default max_unit.
PLACEMENT_MAX_INT = 2147483647
MAX_UNIT_DEFAULT = PLACEMENT_MAX_INT
# Placement's largest allocation_ratio (a single-precision SQL float's maximum).
PLACEMENT_MAX_RATIO = 3.40282e38
# Usage is a sum of allocations, so it may pass PLACEMENT_MAX_INT; up to 2**53 every capacity
# comparison (integer usage and amount against a float capacity) is exact.
MAX_USED = 2**53
# A host's counts (instances, I/O operations, failed builds) are int32 columns.
MAX_COUNT = 2**31 - 1
DEFAULT_AVAILABILITY_ZONE = "nova"  # Nova's CONF.default_availability_zone
DEFAULT_CIDR = "/24"  # SimpleCIDRAffinityFilter's default


@dataclass(frozen=True)
class Inventory:
    total: int
    reserved: int = 0
    allocation_ratio: float = 1.0
    min_unit: int = 1
    max_unit: int = MAX_UNIT_DEFAULT
    step_size: int = 1
    used: int = 0

    @property
    def capacity(self) -> float:
        """Placement's capacity, compared as `used + amount <= capacity`."""
        return (self.total - self.reserved) * self.allocation_ratio


@dataclass(frozen=True)
class MemPages:
    """One page size of a NUMA cell (Nova's NUMAPagesTopology); counts in pages of size_kb."""
    size_kb: int
    total: int
    used: int = 0
    reserved: int = 0

    @property
    def free(self) -> int:
        return self.total - self.used - self.reserved


@dataclass(frozen=True)
class NumaCell:
    """One host NUMA cell, as Nova's NUMACell."""
    id: int
    cpuset: frozenset[int] = frozenset()  # CPUs for shared guest vCPUs ([compute] cpu_shared_set)
    pcpuset: frozenset[int] = frozenset()  # CPUs for pinned guest vCPUs ([compute] cpu_dedicated_set)
    memory: int = 0  # MB
    cpu_usage: int = 0  # shared vCPUs of the guests on this cell
    memory_usage: int = 0  # MB used by the guests on this cell
    pinned_cpus: frozenset[int] = frozenset()  # pcpuset CPUs already pinned
    siblings: tuple[frozenset[int], ...] = ()  # SMT thread sibling sets
    mempages: tuple[MemPages, ...] = ()
    socket: int | None = None  # None: unknown


@dataclass(frozen=True)
class PciPool:
    """One PCI device pool of a host (Nova's PciDevicePool): `count` free devices alike."""
    vendor_id: str
    product_id: str
    dev_type: str = "type-PCI"  # type-PCI | type-PF | type-VF | vdpa
    numa_node: int | None = None  # None: the device reports no NUMA node
    count: int = 0
    tags: dict[str, str] = field(default_factory=dict)  # physical_network, trusted, remote_managed, ...


@dataclass(frozen=True)
class Host:
    name: str
    enabled: bool = True
    up: bool = True
    resources: dict[str, Inventory] = field(default_factory=dict)
    traits: frozenset[str] = frozenset()
    host_ip: str = ""
    hypervisor_type: str = ""
    hypervisor_version: int | None = None
    supported_instances: tuple[tuple[str, str, str], ...] = ()
    stats: dict[str, str] = field(default_factory=dict)
    num_instances: int = 0
    num_io_ops: int = 0
    instances: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    failed_builds: int = 0
    numa_cells: tuple[NumaCell, ...] = ()  # empty: the host reports no NUMA topology
    pci_pools: tuple[PciPool, ...] = ()
    # The compute node's allocation ratios as NUMATopologyFilter reads them (its NUMA limits);
    # None: the VCPU / MEMORY_MB inventory's allocation_ratio, else the profile's default.
    cpu_allocation_ratio: float | None = None
    ram_allocation_ratio: float | None = None

    def __post_init__(self):
        # Nova canonicalises supported_instances as it loads a compute node (HVSpec): every
        # route into the engine builds a Host, so every rule sees what Nova sees.
        if self.supported_instances:
            object.__setattr__(self, "supported_instances", canonical_supported_instances(self.supported_instances))


def canonical_supported_instances(entries) -> tuple[tuple[str, str, str], ...]:
    """HVSpec.from_list for each entry; a name Nova cannot load is InvalidField naming it
    relative to the host ("supported_instances[0].architecture"; see host_at)."""
    return _canonical_entries(tuple(map(tuple, entries)))


@functools.lru_cache(maxsize=4096)  # hosts share a handful of lists
def _canonical_entries(entries: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, str, str], ...]:
    canonical = []
    for index, entry in enumerate(entries):
        try:
            canonical.append(canonical_hv_spec(tuple(entry)))
        except ValueError:
            for (name, nova_enum), value in zip(HV_SPEC_FIELDS, entry):
                try:
                    nova_enum.coerce(value)
                except ValueError as error:
                    raise InvalidField(f"supported_instances[{index}].{name}", str(error)) from None
            raise InvalidField(f"supported_instances[{index}]", "must be [architecture, hypervisor type, vm mode]")
    return tuple(canonical)


def host_at(path: str, **fields) -> Host:
    """Host(**fields) for the host at `path` ("fleet.hosts[3]"): a value the Host refuses is
    named under that path."""
    try:
        return Host(**fields)
    except InvalidField as error:
        raise InvalidField(f"{path}.{error.field}", error.description) from None


@dataclass(frozen=True)
class Aggregate:
    id: int
    name: str = ""
    hosts: frozenset[str] = frozenset()
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fleet:
    hosts: tuple[Host, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()

    def aggregates_of(self, host_name: str) -> list[Aggregate]:
        return [agg for agg in self.aggregates if host_name in agg.hosts]


class Operation(enum.Enum):
    BOOT = "boot"
    LIVE_MIGRATE = "live_migrate"
    COLD_MIGRATE = "cold_migrate"
    RESIZE = "resize"
    EVACUATE = "evacuate"
    UNSHELVE = "unshelve"

    @property
    def is_move(self) -> bool:
        return self is not Operation.BOOT

    @property
    def leaves_a_host(self) -> bool:
        """The instance runs on a source host it moves from; an unshelved instance was
        offloaded and runs nowhere."""
        return self.is_move and self is not Operation.UNSHELVE


class GroupPolicy(enum.Enum):
    NONE = ""
    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    SOFT_AFFINITY = "soft-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"


@dataclass(frozen=True)
class ServerGroup:
    policy: GroupPolicy = GroupPolicy.NONE
    members: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    max_server_per_host: int = 1


@dataclass(frozen=True)
class SchedulerHints:
    same_host: tuple[str, ...] = ()
    different_host: tuple[str, ...] = ()
    build_near_host_ip: str = ""
    cidr: str = DEFAULT_CIDR
    query: str = ""


@dataclass(frozen=True)
class Flavor:
    name: str = ""
    extra_specs: dict[str, str] = field(default_factory=dict)
    # The guest's size as NUMA topologies read it; 0: from the request's resources (VCPU + PCPU,
    # MEMORY_MB).
    vcpus: int = 0
    memory_mb: int = 0


@dataclass(frozen=True)
class Port:
    """A Neutron port of the boot: an SR-IOV vnic_type asks for a PCI device (Nova's
    create_resource_requests)."""
    vnic_type: str = "normal"  # normal | direct | direct-physical | macvtap | remote-managed | vdpa ...
    physical_network: str = ""
    trusted: bool | None = None  # binding:profile trusted; None: not set
    numa_affinity_policy: str = ""  # "": none; required | preferred | legacy | socket


@dataclass(frozen=True)
class Image:
    id: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    disk_format: str = ""  # Glance's disk_format (qcow2, raw, ...); "" unknown or boot from volume


@dataclass(frozen=True)
class Request:
    operation: Operation = Operation.BOOT
    resources: dict[str, int] = field(default_factory=dict)
    required_traits: frozenset[str] = frozenset()
    forbidden_traits: frozenset[str] = frozenset()
    member_of: tuple[frozenset[int], ...] = ()
    availability_zone: str = ""
    flavor: Flavor = Flavor()
    image: Image | None = None
    project_id: str = ""
    instance_uuid: str = ""
    scheduler_hints: SchedulerHints = SchedulerHints()
    server_group: ServerGroup | None = None
    source_host: str = ""
    num_instances: int = 1
    profile: str = ""
    ports: tuple[Port, ...] = ()

    def traits_from_extra_specs(self) -> tuple[frozenset[str], frozenset[str]]:
        """Required and forbidden traits with the flavor's `trait:NAME` extra specs added, as Nova does."""
        required, forbidden = set(self.required_traits), set(self.forbidden_traits)
        for key, value in self.flavor.extra_specs.items():
            if key.startswith("trait:"):
                if value == "required":
                    required.add(key[len("trait:"):])
                elif value == "forbidden":
                    forbidden.add(key[len("trait:"):])
        return frozenset(required), frozenset(forbidden)


class InvalidField(ValueError):
    """A request or fleet value that cannot be accepted; `field` is its dotted path."""

    def __init__(self, field_path: str, description: str):
        super().__init__(f"{field_path}: {description}")
        self.field = field_path
        self.description = description

    def __reduce__(self):  # crosses process boundaries (server.fleet_builder)
        return InvalidField, (self.field, self.description)


def require_unique(keys, path: str, key_field: str, what: str) -> None:
    """InvalidField at `path[i].key_field` for the first key seen twice (host names, aggregate ids)."""
    seen = set()
    for index, key in enumerate(keys):
        if key in seen:
            raise InvalidField(f"{path}[{index}].{key_field}", f"duplicate {what} {key!r}")
        seen.add(key)
