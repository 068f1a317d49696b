"""Proto messages <-> engine.model values, both ways.

Everything a caller sends is validated here, before it reaches the engine:
a bad value raises engine.model.InvalidField naming the proto field path
(e.g. "request.resources[VCPU]"), which the servicers turn into
INVALID_ARGUMENT with a BadRequest field violation.
"""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import math
import re

from placecheck_engine.model import (
    MAX_UNIT_DEFAULT,
    MAX_USED,
    PLACEMENT_MAX_INT,
    PLACEMENT_MAX_RATIO,
    Aggregate,
    Fleet,
    Flavor,
    GroupPolicy,
    Host,
    Image,
    InvalidField,
    Inventory,
    MemPages,
    NumaCell,
    Operation,
    PciPool,
    Port,
    Request,
    SchedulerHints,
    ServerGroup,
    host_at,
    require_unique,
)
from placecheck_engine.fleetfile import (INVENTORY_RANGES, validate_numa_and_pci, validate_numa_cells,
                                         validate_pci_pools)
from placecheck_engine.state import HostUsage
from placecheck_engine.verdict import CheckResult, SelectResult, WeighedHost
from placecheck.v1 import fleet_pb2, placement_pb2, state_pb2

# Placement's resource class syntax: standard classes and CUSTOM_* share it.
RESOURCE_CLASS_PATTERN = re.compile(r"^[A-Z0-9_]+$")

OPERATION_FROM_PROTO = {
    placement_pb2.OPERATION_UNSPECIFIED: Operation.BOOT,
    placement_pb2.OPERATION_BOOT: Operation.BOOT,
    placement_pb2.OPERATION_LIVE_MIGRATE: Operation.LIVE_MIGRATE,
    placement_pb2.OPERATION_COLD_MIGRATE: Operation.COLD_MIGRATE,
    placement_pb2.OPERATION_RESIZE: Operation.RESIZE,
    placement_pb2.OPERATION_EVACUATE: Operation.EVACUATE,
    placement_pb2.OPERATION_UNSHELVE: Operation.UNSHELVE,
}
OPERATION_TO_PROTO = {op: value for value, op in OPERATION_FROM_PROTO.items()
                      if value != placement_pb2.OPERATION_UNSPECIFIED}

GROUP_POLICY_FROM_PROTO = {
    placement_pb2.SERVER_GROUP_POLICY_UNSPECIFIED: GroupPolicy.NONE,
    placement_pb2.SERVER_GROUP_POLICY_AFFINITY: GroupPolicy.AFFINITY,
    placement_pb2.SERVER_GROUP_POLICY_ANTI_AFFINITY: GroupPolicy.ANTI_AFFINITY,
    placement_pb2.SERVER_GROUP_POLICY_SOFT_AFFINITY: GroupPolicy.SOFT_AFFINITY,
    placement_pb2.SERVER_GROUP_POLICY_SOFT_ANTI_AFFINITY: GroupPolicy.SOFT_ANTI_AFFINITY,
}
GROUP_POLICY_TO_PROTO = {policy: value for value, policy in GROUP_POLICY_FROM_PROTO.items()}


def _require(condition: bool, field_path: str, description: str) -> None:
    if not condition:
        raise InvalidField(field_path, description)


def _non_negative(value: int, field_path: str) -> int:
    _require(value >= 0, field_path, "must be >= 0")
    return value


def _in_range(value: int, field_path: str, low: int, high: int) -> int:
    _require(low <= value <= high, field_path, f"must be from {low} to {high}")
    return value


def _names(values, field_path: str) -> tuple[str, ...]:
    names = tuple(values)
    if not all(names):  # the index of the first empty one only when there is one
        _require(False, f"{field_path}[{names.index('')}]", "must not be empty")
    return names


# ---------------------------------------------------------------- fleet, inbound

def inventory_from_proto(msg: fleet_pb2.Inventory, path: str) -> Inventory:
    # Field paths are formatted only for a refusal: a fleet has hundreds of thousands of inventories.
    has = msg.HasField
    ratio = msg.allocation_ratio if has("allocation_ratio") else 1.0
    _require(0 < ratio <= PLACEMENT_MAX_RATIO, f"{path}.allocation_ratio", f"must be > 0 and <= {PLACEMENT_MAX_RATIO}")
    # min_unit > max_unit is accepted: Placement then refuses every amount, which the rule reports.
    inventory = Inventory(total=msg.total, reserved=msg.reserved, allocation_ratio=ratio,
                          min_unit=msg.min_unit if has("min_unit") else 1,
                          max_unit=msg.max_unit if has("max_unit") else MAX_UNIT_DEFAULT,
                          step_size=msg.step_size if has("step_size") else 1, used=msg.used)
    for name, low, high in INVENTORY_RANGES:
        if not low <= getattr(inventory, name) <= high:
            raise InvalidField(f"{path}.{name}", f"must be from {low} to {high}")
    return inventory


def host_from_proto(msg: fleet_pb2.Host, path: str) -> Host:
    _require(bool(msg.name), f"{path}.name", "must not be empty")
    resources = {}
    for rc, inventory in msg.resources.items():
        if not RESOURCE_CLASS_PATTERN.match(rc):
            raise InvalidField(f"{path}.resources[{rc}]", "resource class must match [A-Z0-9_]+")
        resources[rc] = inventory_from_proto(inventory, f"{path}.resources[{rc}]")
    for metric, value in msg.metrics.items():
        _require(math.isfinite(value), f"{path}.metrics[{metric}]", "must be a finite number")
    host = host_at(
        path,
        name=msg.name,
        enabled=msg.enabled if msg.HasField("enabled") else True,
        up=msg.up if msg.HasField("up") else True,
        resources=resources,
        traits=frozenset(_names(msg.traits, f"{path}.traits")),
        host_ip=msg.host_ip,
        hypervisor_type=msg.hypervisor_type,
        hypervisor_version=msg.hypervisor_version if msg.HasField("hypervisor_version") else None,
        supported_instances=tuple((s.architecture, s.hypervisor_type, s.vm_mode)
                                  for s in msg.supported_instances),
        stats=dict(msg.stats),
        num_instances=_non_negative(msg.num_instances, f"{path}.num_instances"),
        num_io_ops=_non_negative(msg.num_io_ops, f"{path}.num_io_ops"),
        instances=_names(msg.instances, f"{path}.instances"),
        metrics=dict(msg.metrics),
        failed_builds=_non_negative(msg.failed_builds, f"{path}.failed_builds"),
        numa_cells=tuple(map(numa_cell_from_proto, msg.numa_cells)),
        pci_pools=tuple(map(pci_pool_from_proto, msg.pci_pools)),
        cpu_allocation_ratio=msg.cpu_allocation_ratio if msg.HasField("cpu_allocation_ratio") else None,
        ram_allocation_ratio=msg.ram_allocation_ratio if msg.HasField("ram_allocation_ratio") else None,
    )
    validate_numa_and_pci(host, path)
    return host


def numa_cell_from_proto(msg: fleet_pb2.NumaCell) -> NumaCell:
    """Unvalidated: engine.fleetfile.validate_numa_cells names a bad value's field."""
    return NumaCell(
        id=msg.id, cpuset=frozenset(msg.cpuset), pcpuset=frozenset(msg.pcpuset), memory=msg.memory,
        cpu_usage=msg.cpu_usage, memory_usage=msg.memory_usage, pinned_cpus=frozenset(msg.pinned_cpus),
        siblings=tuple(frozenset(siblings.cpus) for siblings in msg.siblings),
        mempages=tuple(MemPages(size_kb=pages.size_kb, total=pages.total, used=pages.used, reserved=pages.reserved)
                       for pages in msg.mempages),
        socket=msg.socket if msg.HasField("socket") else None)


def pci_pool_from_proto(msg: fleet_pb2.PciPool) -> PciPool:
    """Unvalidated: engine.fleetfile.validate_pci_pools names a bad value's field."""
    return PciPool(vendor_id=msg.vendor_id, product_id=msg.product_id, dev_type=msg.dev_type or PciPool.dev_type,
                   numa_node=msg.numa_node if msg.HasField("numa_node") else None, count=msg.count,
                   tags=dict(msg.tags))


def hosts_from_proto(messages, path: str) -> tuple[Host, ...]:
    hosts = tuple(host_from_proto(msg, f"{path}[{index}]") for index, msg in enumerate(messages))
    require_unique([host.name for host in hosts], path, "name", "host name")
    return hosts


def aggregate_from_proto(msg: fleet_pb2.Aggregate, path: str) -> Aggregate:
    _require(msg.id > 0, f"{path}.id", "must be > 0")
    return Aggregate(id=msg.id, name=msg.name,
                     hosts=frozenset(_names(msg.hosts, f"{path}.hosts")),
                     metadata=dict(msg.metadata))


def aggregates_from_proto(messages, path: str) -> tuple[Aggregate, ...]:
    aggregates = tuple(aggregate_from_proto(msg, f"{path}[{index}]") for index, msg in enumerate(messages))
    require_unique([aggregate.id for aggregate in aggregates], path, "id", "aggregate id")
    return aggregates


def fleet_from_proto(msg: fleet_pb2.Fleet, path: str = "fleet") -> Fleet:
    return Fleet(hosts=hosts_from_proto(msg.hosts, f"{path}.hosts"),
                 aggregates=aggregates_from_proto(msg.aggregates, f"{path}.aggregates"))


def names_from_proto(names, path: str) -> list[str]:
    """Host names to remove: at least one, none empty, none twice."""
    _require(len(names) > 0, path, "at least one name is required")
    seen = set()
    for index, name in enumerate(_names(names, path)):
        _require(name not in seen, f"{path}[{index}]", f"{name!r} is named twice")
        seen.add(name)
    return list(names)


def aggregate_ids_from_proto(ids, path: str) -> list[int]:
    _require(len(ids) > 0, path, "at least one id is required")
    for index, aggregate_id in enumerate(ids):
        _require(aggregate_id > 0, f"{path}[{index}]", "must be > 0")
    return list(ids)


def host_usage_from_proto(msg: state_pb2.HostUsage, path: str) -> HostUsage:
    _require(bool(msg.name), f"{path}.name", "must not be empty")
    for rc, used in msg.used.items():
        _require(bool(RESOURCE_CLASS_PATTERN.match(rc)), f"{path}.used[{rc}]", "resource class must match [A-Z0-9_]+")
        _in_range(used, f"{path}.used[{rc}]", 0, MAX_USED)
    for count in ("num_instances", "num_io_ops"):
        if msg.HasField(count):
            _non_negative(getattr(msg, count), f"{path}.{count}")
    instances = _names(msg.instances.uuids, f"{path}.instances.uuids") if msg.HasField("instances") else None
    numa_cells = pci_pools = None
    if msg.HasField("numa_cells"):
        numa_cells = tuple(map(numa_cell_from_proto, msg.numa_cells.cells))
        validate_numa_cells(numa_cells, f"{path}.numa_cells.cells")
    if msg.HasField("pci_pools"):
        pci_pools = tuple(map(pci_pool_from_proto, msg.pci_pools.pools))
        validate_pci_pools(pci_pools, f"{path}.pci_pools.pools")
    return HostUsage(
        name=msg.name,
        used=dict(msg.used),
        num_instances=msg.num_instances if msg.HasField("num_instances") else None,
        num_io_ops=msg.num_io_ops if msg.HasField("num_io_ops") else None,
        instances=instances,
        numa_cells=numa_cells,
        pci_pools=pci_pools,
    )


# ---------------------------------------------------------------- fleet, outbound

def inventory_to_proto(inventory: Inventory) -> fleet_pb2.Inventory:
    return fleet_pb2.Inventory(
        total=inventory.total, reserved=inventory.reserved,
        allocation_ratio=inventory.allocation_ratio, min_unit=inventory.min_unit,
        max_unit=inventory.max_unit, step_size=inventory.step_size, used=inventory.used)


def host_to_proto(host: Host) -> fleet_pb2.Host:
    msg = fleet_pb2.Host(
        name=host.name, enabled=host.enabled, up=host.up,
        resources={rc: inventory_to_proto(inv) for rc, inv in host.resources.items()},
        traits=sorted(host.traits), host_ip=host.host_ip, hypervisor_type=host.hypervisor_type,
        supported_instances=[fleet_pb2.SupportedInstance(architecture=arch, hypervisor_type=hv, vm_mode=mode)
                             for arch, hv, mode in host.supported_instances],
        stats=host.stats, num_instances=host.num_instances, num_io_ops=host.num_io_ops,
        instances=host.instances, metrics=host.metrics, failed_builds=host.failed_builds)
    if host.hypervisor_version is not None:
        msg.hypervisor_version = host.hypervisor_version
    msg.numa_cells.extend(map(numa_cell_to_proto, host.numa_cells))
    msg.pci_pools.extend(map(pci_pool_to_proto, host.pci_pools))
    for name in ("cpu_allocation_ratio", "ram_allocation_ratio"):
        if getattr(host, name) is not None:
            setattr(msg, name, getattr(host, name))
    return msg


def numa_cell_to_proto(cell: NumaCell) -> fleet_pb2.NumaCell:
    msg = fleet_pb2.NumaCell(
        id=cell.id, cpuset=sorted(cell.cpuset), pcpuset=sorted(cell.pcpuset), memory=cell.memory,
        cpu_usage=cell.cpu_usage, memory_usage=cell.memory_usage, pinned_cpus=sorted(cell.pinned_cpus),
        siblings=[fleet_pb2.CpuSiblings(cpus=sorted(siblings)) for siblings in cell.siblings],
        mempages=[fleet_pb2.MemPages(size_kb=pages.size_kb, total=pages.total, used=pages.used,
                                     reserved=pages.reserved) for pages in cell.mempages])
    if cell.socket is not None:
        msg.socket = cell.socket
    return msg


def pci_pool_to_proto(pool: PciPool) -> fleet_pb2.PciPool:
    msg = fleet_pb2.PciPool(vendor_id=pool.vendor_id, product_id=pool.product_id, dev_type=pool.dev_type,
                            count=pool.count, tags=pool.tags)
    if pool.numa_node is not None:
        msg.numa_node = pool.numa_node
    return msg


def aggregate_to_proto(aggregate: Aggregate) -> fleet_pb2.Aggregate:
    return fleet_pb2.Aggregate(id=aggregate.id, name=aggregate.name,
                               hosts=sorted(aggregate.hosts), metadata=aggregate.metadata)


def fleet_to_proto(fleet: Fleet) -> fleet_pb2.Fleet:
    return fleet_pb2.Fleet(hosts=[host_to_proto(h) for h in fleet.hosts],
                           aggregates=[aggregate_to_proto(a) for a in fleet.aggregates])


# ---------------------------------------------------------------- request, inbound

def _scheduler_hints_from_proto(msg: placement_pb2.SchedulerHints, path: str) -> SchedulerHints:
    if msg.build_near_host_ip:
        try:
            ipaddress.ip_address(msg.build_near_host_ip)
        except ValueError:
            raise InvalidField(f"{path}.build_near_host_ip", "must be an IPv4 or IPv6 address") from None
    cidr = msg.cidr or SchedulerHints.cidr
    prefix = cidr[1:]
    _require(cidr.startswith("/") and prefix.isdigit() and int(prefix) <= 128,
             f"{path}.cidr", 'must be a prefix length such as "/24"')
    if msg.query:
        try:
            json.loads(msg.query)
        except (ValueError, RecursionError) as error:  # RecursionError: nested too deeply
            raise InvalidField(f"{path}.query", f"must be a JSON query: {error}") from None
    return SchedulerHints(same_host=_names(msg.same_host, f"{path}.same_host"),
                          different_host=_names(msg.different_host, f"{path}.different_host"),
                          build_near_host_ip=msg.build_near_host_ip, cidr=cidr, query=msg.query)


def _server_group_from_proto(msg: placement_pb2.ServerGroup, path: str) -> ServerGroup:
    policy = GROUP_POLICY_FROM_PROTO.get(msg.policy)
    _require(policy is not None, f"{path}.policy", f"unknown value {msg.policy}")
    max_per_host = msg.max_server_per_host if msg.HasField("max_server_per_host") else 1
    _require(max_per_host >= 1, f"{path}.max_server_per_host", "must be >= 1")
    return ServerGroup(policy=policy, members=_names(msg.members, f"{path}.members"),
                       hosts=_names(msg.hosts, f"{path}.hosts"), max_server_per_host=max_per_host)


def request_from_proto(msg: placement_pb2.PlacementRequest, path: str = "request") -> Request:
    operation = OPERATION_FROM_PROTO.get(msg.operation)
    _require(operation is not None, f"{path}.operation", f"unknown value {msg.operation}")
    operation_name = placement_pb2.Operation.Name(msg.operation)
    if operation.leaves_a_host:
        _require(bool(msg.source_host), f"{path}.source_host", f"required for {operation_name}")
    if operation.is_move:
        _require(bool(msg.instance_uuid), f"{path}.instance_uuid", f"required for {operation_name}")
    resources = {}
    for rc, amount in msg.resources.items():
        rc_path = f"{path}.resources[{rc}]"
        _require(bool(RESOURCE_CLASS_PATTERN.match(rc)), rc_path, "resource class must match [A-Z0-9_]+")
        resources[rc] = _in_range(amount, rc_path, 0, PLACEMENT_MAX_INT)
    member_of = []
    for index, aggregate_set in enumerate(msg.member_of):
        set_path = f"{path}.member_of[{index}].aggregate_ids"
        _require(len(aggregate_set.aggregate_ids) > 0, set_path, "must name at least one aggregate")
        for id_index, aggregate_id in enumerate(aggregate_set.aggregate_ids):
            _require(aggregate_id > 0, f"{set_path}[{id_index}]", "must be > 0")
        member_of.append(frozenset(aggregate_set.aggregate_ids))
    _non_negative(msg.num_instances, f"{path}.num_instances")
    for name in ("vcpus", "memory_mb"):
        _in_range(getattr(msg.flavor, name), f"{path}.flavor.{name}", 0, PLACEMENT_MAX_INT)
    return Request(
        operation=operation,
        resources=resources,
        required_traits=frozenset(_names(msg.required_traits, f"{path}.required_traits")),
        forbidden_traits=frozenset(_names(msg.forbidden_traits, f"{path}.forbidden_traits")),
        member_of=tuple(member_of),
        availability_zone=msg.availability_zone,
        flavor=Flavor(name=msg.flavor.name, extra_specs=dict(msg.flavor.extra_specs), vcpus=msg.flavor.vcpus,
                      memory_mb=msg.flavor.memory_mb),
        image=Image(id=msg.image.id, properties=dict(msg.image.properties),
                    disk_format=msg.image.disk_format) if msg.HasField("image") else None,
        project_id=msg.project_id,
        instance_uuid=msg.instance_uuid,
        scheduler_hints=_scheduler_hints_from_proto(msg.scheduler_hints, f"{path}.scheduler_hints"),
        server_group=(_server_group_from_proto(msg.server_group, f"{path}.server_group")
                      if msg.HasField("server_group") else None),
        source_host=msg.source_host,
        num_instances=msg.num_instances or 1,
        profile=msg.profile,
        ports=tuple(Port(vnic_type=port.vnic_type or Port.vnic_type, physical_network=port.physical_network,
                         trusted=port.trusted if port.HasField("trusted") else None,
                         numa_affinity_policy=port.numa_affinity_policy) for port in msg.ports),
    )


# Distinct serialized requests a process keeps converted (a Request is a few KB at most).
CONVERTED_REQUESTS_KEPT = 256


# Stands for a request's instance_uuid while its other fields are converted (only its presence
# is validated); the caller's own replaces it.
_SOME_INSTANCE = "instance"


def request_from_proto_reused(msg: placement_pb2.PlacementRequest) -> Request:
    """request_from_proto(msg), converted once per distinct serialized request (its instance_uuid,
    new with every boot, aside) and reused (a Request is immutable): the same flavor, image and
    hints booted again, or one request checked host after host, cost a serialization and a lookup.
    A request refused as invalid is converted (and refused) each time."""
    return _request_from_body(msg.SerializeToString())


@functools.lru_cache(maxsize=CONVERTED_REQUESTS_KEPT)
def _request_from_body(body: bytes) -> Request:
    """The same request sent again whole (one instance's move checked host after host) is the
    same Request object, which the engine's per-request caches then find by identity."""
    msg = placement_pb2.PlacementRequest.FromString(body)
    instance_uuid = msg.instance_uuid
    if not instance_uuid:
        return request_from_proto(msg)
    msg.ClearField("instance_uuid")
    return dataclasses.replace(_request_of_any_instance(msg.SerializeToString()), instance_uuid=instance_uuid)


@functools.lru_cache(maxsize=CONVERTED_REQUESTS_KEPT)
def _request_of_any_instance(body_without_instance: bytes) -> Request:
    """A request with an instance_uuid, converted once for every instance (each boot's is new)."""
    msg = placement_pb2.PlacementRequest.FromString(body_without_instance)
    msg.instance_uuid = _SOME_INSTANCE
    return request_from_proto(msg)


def check_hosts_from_proto(msg: placement_pb2.CheckDestinationRequest) -> list[str]:
    _require(len(msg.hosts) > 0, "hosts", "at least one host is required")
    return list(_names(msg.hosts, "hosts"))


def max_alternates_from_proto(msg: placement_pb2.SelectDestinationsRequest) -> int | None:
    """The request's max_alternates; None (unset) lets the profile's max_attempts decide."""
    if msg.HasField("max_alternates"):
        return _non_negative(msg.max_alternates, "max_alternates")
    return None


# ---------------------------------------------------------------- request, outbound (the CLI)

def request_to_proto(request: Request) -> placement_pb2.PlacementRequest:
    hints = request.scheduler_hints
    msg = placement_pb2.PlacementRequest(
        operation=OPERATION_TO_PROTO[request.operation],
        resources=request.resources,
        required_traits=sorted(request.required_traits),
        forbidden_traits=sorted(request.forbidden_traits),
        member_of=[placement_pb2.AggregateSet(aggregate_ids=sorted(ids)) for ids in request.member_of],
        availability_zone=request.availability_zone,
        flavor=placement_pb2.Flavor(name=request.flavor.name, extra_specs=request.flavor.extra_specs,
                                    vcpus=request.flavor.vcpus, memory_mb=request.flavor.memory_mb),
        project_id=request.project_id,
        instance_uuid=request.instance_uuid,
        scheduler_hints=placement_pb2.SchedulerHints(
            same_host=hints.same_host, different_host=hints.different_host,
            build_near_host_ip=hints.build_near_host_ip, cidr=hints.cidr, query=hints.query),
        source_host=request.source_host,
        num_instances=request.num_instances,
        profile=request.profile,
        ports=[placement_pb2.Port(vnic_type=port.vnic_type, physical_network=port.physical_network,
                                  trusted=port.trusted, numa_affinity_policy=port.numa_affinity_policy)
               for port in request.ports],
    )
    if request.image is not None:
        msg.image.CopyFrom(placement_pb2.Image(id=request.image.id, properties=request.image.properties,
                                                disk_format=request.image.disk_format))
    if request.server_group is not None:
        group = request.server_group
        msg.server_group.CopyFrom(placement_pb2.ServerGroup(
            policy=GROUP_POLICY_TO_PROTO[group.policy], members=group.members, hosts=group.hosts,
            max_server_per_host=group.max_server_per_host))
    return msg


# ---------------------------------------------------------------- results, outbound
# Responses are built from dicts: a submessage given as a message is built and then copied into
# its parent, one given as a dict is built in place (half the time for a SelectDestinations reply).

def _weighed_host(weighed: WeighedHost) -> dict:
    return {"host": weighed.host, "weight": weighed.weight,
            "weighers": [{"weigher": s.weigher, "raw": s.raw, "normalized": s.normalized,
                          "multiplier": s.multiplier, "contribution": s.contribution} for s in weighed.weighers]}


def check_response(result: CheckResult, *, generation: int, decision_id: str,
                   config_revision: str) -> placement_pb2.CheckDestinationResponse:
    response = placement_pb2.CheckDestinationResponse(generation=generation, decision_id=decision_id,
                                                      profile=result.profile, config_revision=config_revision)
    add_verdict = response.verdicts.add
    for verdict in result.verdicts:
        add_verdict(host=verdict.host, allowed=verdict.allowed, rules_evaluated=verdict.rules_evaluated,
                    rejections=[{"rule": r.rule, "reason": r.reason, "message": r.message, "numbers": r.numbers}
                                for r in verdict.rejections])
    return response


def select_response(result: SelectResult, *, generation: int, decision_id: str,
                    config_revision: str) -> placement_pb2.SelectDestinationsResponse:
    summary = result.summary
    return placement_pb2.SelectDestinationsResponse(
        summary={"hosts_evaluated": summary.hosts_evaluated, "hosts_passed": summary.hosts_passed,
                 "eliminations": [{"rule": rule, "hosts": n} for rule, n in summary.eliminations],
                 "message": summary.message, "instances_requested": summary.instances_requested,
                 "instances_placed": summary.instances_placed},
        placements=[{"selected": _weighed_host(placement.selected),
                     "alternates": [_weighed_host(alternate) for alternate in placement.alternates]}
                    for placement in result.placements],
        generation=generation, decision_id=decision_id, profile=result.profile, config_revision=config_revision)
