"""The JSON fleet file <-> Fleet, and the JSON request <-> Request (docs/fleet-file.md).

The shapes are those of the conformance cases' `hosts`, `aggregates` and
`request`. Every value that cannot be accepted raises InvalidField with the
dotted path of the value, e.g. "hosts[3].resources.VCPU.total". The value rules
on model objects (validate_host, validate_aggregate, validate_fleet) are those of
the proto contract, public so that the state owner applies them to fleets that
never were JSON. A file, written by hand, is held to a few more rules
(_check_file_rules) that catch typos.
"""
from __future__ import annotations

import ipaddress
import json
import math
import re
from typing import Any

from placecheck_engine.model import (
    MAX_COUNT, MAX_UNIT_DEFAULT, MAX_USED, PLACEMENT_MAX_INT, PLACEMENT_MAX_RATIO, Aggregate, Flavor, Fleet, GroupPolicy,
    Host, Image, InvalidField, Inventory, MemPages, NumaCell, Operation, PciPool, Port, Request, SchedulerHints,
    ServerGroup, host_at, require_unique,
)

INT64_MAX = 2**63 - 1
RESOURCE_CLASS_PATTERN = re.compile(r"[A-Z0-9_]+")  # Placement's resource class names

HOST_KEYS = frozenset({
    "name", "enabled", "up", "resources", "traits", "host_ip", "hypervisor_type", "hypervisor_version",
    "supported_instances", "stats", "num_instances", "num_io_ops", "instances", "metrics", "failed_builds",
    "numa_cells", "pci_pools", "cpu_allocation_ratio", "ram_allocation_ratio",
})
NUMA_CELL_KEYS = frozenset({"id", "cpuset", "pcpuset", "memory", "cpu_usage", "memory_usage", "pinned_cpus",
                            "siblings", "mempages", "socket"})
MEM_PAGES_KEYS = frozenset({"size_kb", "total", "used", "reserved"})
PCI_POOL_KEYS = frozenset({"vendor_id", "product_id", "dev_type", "numa_node", "count", "tags"})
PCI_DEV_TYPES = ("type-PCI", "type-PF", "type-VF", "vdpa")  # Nova's fields.PciDeviceType
PORT_KEYS = frozenset({"vnic_type", "physical_network", "trusted", "numa_affinity_policy"})
INVENTORY_KEYS = frozenset({"total", "reserved", "allocation_ratio", "min_unit", "max_unit", "step_size", "used"})
AGGREGATE_KEYS = frozenset({"id", "name", "hosts", "metadata"})
REQUEST_KEYS = frozenset({
    "operation", "resources", "required_traits", "forbidden_traits", "member_of", "availability_zone",
    "flavor", "image", "project_id", "instance_uuid", "scheduler_hints", "server_group", "source_host",
    "num_instances", "profile", "ports",
})
LIST_HINTS = ("same_host", "different_host")
SINGLE_VALUE_HINTS = ("build_near_host_ip", "cidr", "query")
GROUP_POLICIES = {policy.value: policy for policy in GroupPolicy if policy is not GroupPolicy.NONE}


# ---- reading JSON values, each naming its path ----

def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _object(value: Any, path: str, allowed_keys: frozenset[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise InvalidField(path, "must be a JSON object")
    if allowed_keys is not None:
        for key in value:
            if key not in allowed_keys:
                raise InvalidField(_join(path, key), f"unknown field; expected one of {', '.join(sorted(allowed_keys))}")
    return value


def _list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise InvalidField(path, "must be a JSON array")
    return value


def _string(value: Any, path: str, *, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidField(path, "must be a string")
    if non_empty and not value:
        raise InvalidField(path, "must not be empty")
    return value


def _optional_string(value: Any, path: str) -> str:
    return "" if value is None else _string(value, path)


def _integer(value: Any, path: str, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        kind = (f"an integer from {minimum} to {maximum}" if maximum != INT64_MAX
                else "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}")
        raise InvalidField(path, f"must be {kind}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidField(path, "must be a finite number")
    return float(value)


def _boolean(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidField(path, "must be true or false")
    return value


def _strings(value: Any, path: str) -> list[str]:
    return [_string(item, f"{path}[{index}]") for index, item in enumerate(_list(value, path))]


def _string_map(value: Any, path: str) -> dict[str, str]:
    return {key: _string(item, _join(path, key)) for key, item in _object(value, path).items()}


def _resource_class(name: str, path: str) -> str:
    if not RESOURCE_CLASS_PATTERN.fullmatch(name):
        raise InvalidField(path, "must be a resource class name such as VCPU or CUSTOM_X (A-Z, 0-9, _)")
    return name


# ---- fleet ----

def load_fleet(path: str) -> Fleet:
    """Read a fleet file; a file that is not JSON is an InvalidField at the root."""
    with open(path, encoding="utf-8") as fleet_file:
        try:
            document = json.load(fleet_file)
        except json.JSONDecodeError as error:
            raise InvalidField("", f"{path} is not valid JSON: {error}") from None
    return fleet_from_json(document)


def fleet_from_json(obj: Any) -> Fleet:
    document = _object(obj, "", frozenset({"hosts", "aggregates"}))
    hosts = tuple(_host_from_json(item, f"hosts[{index}]")
                  for index, item in enumerate(_list(document.get("hosts", []), "hosts")))
    aggregates = tuple(_aggregate_from_json(item, f"aggregates[{index}]")
                       for index, item in enumerate(_list(document.get("aggregates", []), "aggregates")))
    fleet = Fleet(hosts=hosts, aggregates=aggregates)
    validate_fleet(fleet)
    _check_file_rules(fleet)
    return fleet


def _check_file_rules(fleet: Fleet) -> None:
    """Stricter than the gRPC API: units that admit no amount, unknown members, bad addresses."""
    names = set()
    for index, host in enumerate(fleet.hosts):
        names.add(host.name)
        for resource_class, inventory in host.resources.items():
            if inventory.min_unit > inventory.max_unit:
                raise InvalidField(f"hosts[{index}].resources.{resource_class}.min_unit",
                                   f"must not exceed max_unit ({inventory.max_unit})")
        if host.host_ip:
            try:
                ipaddress.ip_address(host.host_ip)
            except ValueError:
                raise InvalidField(f"hosts[{index}].host_ip", "must be an IPv4 or IPv6 address") from None
    for index, aggregate in enumerate(fleet.aggregates):
        unknown = sorted(aggregate.hosts - names)
        if unknown:
            raise InvalidField(f"aggregates[{index}].hosts", f"no host named {unknown[0]!r} in the fleet")


def _inventory_from_json(obj: Any, path: str) -> Inventory:
    fields = _object(obj, path, INVENTORY_KEYS)
    if "total" not in fields:
        raise InvalidField(_join(path, "total"), "is required")
    return Inventory(
        total=_integer(fields["total"], _join(path, "total")),
        reserved=_integer(fields.get("reserved", 0), _join(path, "reserved")),
        allocation_ratio=_number(fields.get("allocation_ratio", 1.0), _join(path, "allocation_ratio")),
        min_unit=_integer(fields.get("min_unit", 1), _join(path, "min_unit")),
        max_unit=_integer(fields.get("max_unit", MAX_UNIT_DEFAULT), _join(path, "max_unit")),
        step_size=_integer(fields.get("step_size", 1), _join(path, "step_size")),
        used=_integer(fields.get("used", 0), _join(path, "used")),
    )


def _supported_instance(value: Any, path: str) -> tuple[str, str, str]:
    items = _strings(value, path)
    if len(items) != 3:
        raise InvalidField(path, "must be [architecture, hypervisor type, vm mode]")
    return items[0], items[1], items[2]


def _host_from_json(obj: Any, path: str) -> Host:
    fields = _object(obj, path, HOST_KEYS)
    if "name" not in fields:
        raise InvalidField(_join(path, "name"), "is required")
    resources_path = _join(path, "resources")
    resources = {
        _resource_class(name, _join(resources_path, name)): _inventory_from_json(item, _join(resources_path, name))
        for name, item in _object(fields.get("resources", {}), resources_path).items()
    }
    version = fields.get("hypervisor_version")
    metrics_path = _join(path, "metrics")
    return host_at(
        path,
        name=_string(fields["name"], _join(path, "name")),
        enabled=_boolean(fields.get("enabled", True), _join(path, "enabled")),
        up=_boolean(fields.get("up", True), _join(path, "up")),
        resources=resources,
        traits=frozenset(_strings(fields.get("traits", []), _join(path, "traits"))),
        host_ip=_string(fields.get("host_ip", ""), _join(path, "host_ip")),
        hypervisor_type=_optional_string(fields.get("hypervisor_type"), _join(path, "hypervisor_type")),
        hypervisor_version=None if version is None else _integer(version, _join(path, "hypervisor_version")),
        supported_instances=tuple(
            _supported_instance(item, f"{path}.supported_instances[{index}]")
            for index, item in enumerate(_list(fields.get("supported_instances", []), _join(path, "supported_instances")))),
        stats=_string_map(fields.get("stats", {}), _join(path, "stats")),
        num_instances=_integer(fields.get("num_instances", 0), _join(path, "num_instances")),
        num_io_ops=_integer(fields.get("num_io_ops", 0), _join(path, "num_io_ops")),
        instances=tuple(_strings(fields.get("instances", []), _join(path, "instances"))),
        metrics={key: _number(value, _join(metrics_path, key))
                 for key, value in _object(fields.get("metrics", {}), metrics_path).items()},
        failed_builds=_integer(fields.get("failed_builds", 0), _join(path, "failed_builds")),
        numa_cells=numa_cells_from_json(fields.get("numa_cells", []), _join(path, "numa_cells")),
        pci_pools=pci_pools_from_json(fields.get("pci_pools", []), _join(path, "pci_pools")),
        cpu_allocation_ratio=_optional_number(fields.get("cpu_allocation_ratio"), _join(path, "cpu_allocation_ratio")),
        ram_allocation_ratio=_optional_number(fields.get("ram_allocation_ratio"), _join(path, "ram_allocation_ratio")),
    )


def _optional_number(value: Any, path: str) -> float | None:
    return None if value is None else _number(value, path)


def _optional_integer(value: Any, path: str) -> int | None:
    return None if value is None else _integer(value, path)


def _cpus(value: Any, path: str) -> frozenset[int]:
    return frozenset(_integer(item, f"{path}[{index}]") for index, item in enumerate(_list(value, path)))


def numa_cells_from_json(value: Any, path: str) -> tuple[NumaCell, ...]:
    """A host's NUMA cells (docs/fleet-file.md); `path` names the list."""
    return tuple(_numa_cell_from_json(item, f"{path}[{index}]") for index, item in enumerate(_list(value, path)))


def _numa_cell_from_json(obj: Any, path: str) -> NumaCell:
    fields = _object(obj, path, NUMA_CELL_KEYS)
    if "id" not in fields:
        raise InvalidField(_join(path, "id"), "is required")
    siblings_path, mempages_path = _join(path, "siblings"), _join(path, "mempages")
    return NumaCell(
        id=_integer(fields["id"], _join(path, "id")),
        cpuset=_cpus(fields.get("cpuset", []), _join(path, "cpuset")),
        pcpuset=_cpus(fields.get("pcpuset", []), _join(path, "pcpuset")),
        memory=_integer(fields.get("memory", 0), _join(path, "memory")),
        cpu_usage=_integer(fields.get("cpu_usage", 0), _join(path, "cpu_usage")),
        memory_usage=_integer(fields.get("memory_usage", 0), _join(path, "memory_usage")),
        pinned_cpus=_cpus(fields.get("pinned_cpus", []), _join(path, "pinned_cpus")),
        siblings=tuple(_cpus(item, f"{siblings_path}[{index}]")
                       for index, item in enumerate(_list(fields.get("siblings", []), siblings_path))),
        mempages=tuple(_mem_pages_from_json(item, f"{mempages_path}[{index}]")
                       for index, item in enumerate(_list(fields.get("mempages", []), mempages_path))),
        socket=_optional_integer(fields.get("socket"), _join(path, "socket")),
    )


def _mem_pages_from_json(obj: Any, path: str) -> MemPages:
    fields = _object(obj, path, MEM_PAGES_KEYS)
    for required in ("size_kb", "total"):
        if required not in fields:
            raise InvalidField(_join(path, required), "is required")
    return MemPages(**{key: _integer(fields.get(key, 0), _join(path, key)) for key in ("size_kb", "total", "used",
                                                                                        "reserved")})


def pci_pools_from_json(value: Any, path: str) -> tuple[PciPool, ...]:
    """A host's PCI device pools (docs/fleet-file.md); `path` names the list."""
    return tuple(_pci_pool_from_json(item, f"{path}[{index}]") for index, item in enumerate(_list(value, path)))


def _pci_pool_from_json(obj: Any, path: str) -> PciPool:
    fields = _object(obj, path, PCI_POOL_KEYS)
    return PciPool(
        vendor_id=_string(fields.get("vendor_id"), _join(path, "vendor_id")),
        product_id=_string(fields.get("product_id"), _join(path, "product_id")),
        dev_type=_string(fields.get("dev_type", PciPool.dev_type), _join(path, "dev_type")),
        numa_node=_optional_integer(fields.get("numa_node"), _join(path, "numa_node")),
        count=_integer(fields.get("count", 0), _join(path, "count")),
        tags=_string_map(fields.get("tags", {}), _join(path, "tags")),
    )


def _aggregate_from_json(obj: Any, path: str) -> Aggregate:
    fields = _object(obj, path, AGGREGATE_KEYS)
    if "id" not in fields:
        raise InvalidField(_join(path, "id"), "is required")
    return Aggregate(
        id=_integer(fields["id"], _join(path, "id"), minimum=1),
        name=_string(fields.get("name", ""), _join(path, "name")),
        hosts=frozenset(_strings(fields.get("hosts", []), _join(path, "hosts"))),
        metadata=_string_map(fields.get("metadata", {}), _join(path, "metadata")),
    )


# (field, lowest, highest): Placement's API limits; usage, a sum, up to where it stays exact.
INVENTORY_RANGES = (("total", 0, PLACEMENT_MAX_INT), ("reserved", 0, PLACEMENT_MAX_INT),
                    ("min_unit", 1, PLACEMENT_MAX_INT), ("max_unit", 1, PLACEMENT_MAX_INT),
                    ("step_size", 1, PLACEMENT_MAX_INT), ("used", 0, MAX_USED))


def validate_inventory(inventory: Inventory, path: str) -> None:
    """Placement's inventory rules; min_unit > max_unit is allowed here (nothing then fits)."""
    for name, low, high in INVENTORY_RANGES:
        if not low <= getattr(inventory, name) <= high:
            raise InvalidField(_join(path, name), f"must be an integer from {low} to {high}")
    if not 0 < inventory.allocation_ratio <= PLACEMENT_MAX_RATIO:  # NaN fails too
        raise InvalidField(_join(path, "allocation_ratio"), f"must be > 0 and <= {PLACEMENT_MAX_RATIO}")


def validate_host(host: Host, path: str) -> None:
    """The value rules of one host; `path` names it (e.g. "hosts[3]")."""
    if not host.name:
        raise InvalidField(_join(path, "name"), "must not be empty")
    for resource_class, inventory in host.resources.items():
        _resource_class(resource_class, f"{path}.resources.{resource_class}")
        validate_inventory(inventory, f"{path}.resources.{resource_class}")
    for name in ("num_instances", "num_io_ops", "failed_builds"):
        if not 0 <= getattr(host, name) <= MAX_COUNT:
            raise InvalidField(_join(path, name), f"must be an integer from 0 to {MAX_COUNT}")
    if host.hypervisor_version is not None and not 0 <= host.hypervisor_version <= INT64_MAX:
        raise InvalidField(_join(path, "hypervisor_version"), f"must be an integer from 0 to {INT64_MAX}")
    validate_numa_and_pci(host, path)


def validate_numa_and_pci(host: Host, path: str) -> None:
    """The value rules of a host's NUMA cells, PCI pools and allocation ratios (every route applies
    them: the fleet file, the gRPC contract, usage updates)."""
    for name in ("cpu_allocation_ratio", "ram_allocation_ratio"):
        ratio = getattr(host, name)
        if ratio is not None and not 0 < ratio <= PLACEMENT_MAX_RATIO:  # NaN fails too
            raise InvalidField(_join(path, name), f"must be > 0 and <= {PLACEMENT_MAX_RATIO}")
    validate_numa_cells(host.numa_cells, _join(path, "numa_cells"))
    validate_pci_pools(host.pci_pools, _join(path, "pci_pools"))


def _check_range(value, path: str, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidField(path, f"must be an integer from {low} to {high}")


def _check_cpus(cpus, path: str) -> None:
    for cpu in sorted(cpus):
        _check_range(cpu, path, 0, MAX_COUNT)


def validate_numa_cells(cells, path: str) -> None:
    """`path` names the list (e.g. "hosts[3].numa_cells")."""
    for index, cell in enumerate(cells):
        cell_path = f"{path}[{index}]"
        _check_range(cell.id, _join(cell_path, "id"), 0, MAX_COUNT)
        for name in ("cpuset", "pcpuset", "pinned_cpus"):
            _check_cpus(getattr(cell, name), _join(cell_path, name))
        for position, siblings in enumerate(cell.siblings):
            _check_cpus(siblings, f"{cell_path}.siblings[{position}]")
        for name in ("memory", "cpu_usage", "memory_usage"):
            _check_range(getattr(cell, name), _join(cell_path, name), 0, MAX_USED)
        stray = sorted(cell.pinned_cpus - cell.pcpuset)
        if stray:
            raise InvalidField(_join(cell_path, "pinned_cpus"), f"CPU {stray[0]} is not in the cell's pcpuset")
        for position, pages in enumerate(cell.mempages):
            pages_path = f"{cell_path}.mempages[{position}]"
            _check_range(pages.size_kb, _join(pages_path, "size_kb"), 1, MAX_USED)
            for name in ("total", "used", "reserved"):
                _check_range(getattr(pages, name), _join(pages_path, name), 0, MAX_USED)
        require_unique([pages.size_kb for pages in cell.mempages], _join(cell_path, "mempages"), "size_kb",
                       "page size")
        if cell.socket is not None:
            _check_range(cell.socket, _join(cell_path, "socket"), 0, MAX_COUNT)
    require_unique([cell.id for cell in cells], path, "id", "NUMA cell id")


def validate_pci_pools(pools, path: str) -> None:
    """`path` names the list (e.g. "hosts[3].pci_pools")."""
    for index, pool in enumerate(pools):
        pool_path = f"{path}[{index}]"
        for name in ("vendor_id", "product_id"):
            if not getattr(pool, name):
                raise InvalidField(_join(pool_path, name), "must not be empty")
        if pool.dev_type not in PCI_DEV_TYPES:
            raise InvalidField(_join(pool_path, "dev_type"), f"must be one of {', '.join(PCI_DEV_TYPES)}")
        if pool.numa_node is not None:
            _check_range(pool.numa_node, _join(pool_path, "numa_node"), 0, MAX_COUNT)
        _check_range(pool.count, _join(pool_path, "count"), 0, MAX_COUNT)


def validate_aggregate(aggregate: Aggregate, path: str) -> None:
    """The value rules of one aggregate; members are names, matched to hosts as they come and go."""
    if aggregate.id < 1:
        raise InvalidField(_join(path, "id"), "must be an integer >= 1")
    for member in aggregate.hosts:
        if not member:
            raise InvalidField(_join(path, "hosts"), "host names must not be empty")


def validate_hosts(hosts, path: str = "hosts") -> None:
    """Every host valid and host names unique."""
    for index, host in enumerate(hosts):
        validate_host(host, f"{path}[{index}]")
    require_unique([host.name for host in hosts], path, "name", "host name")


def validate_aggregates(aggregates, path: str = "aggregates") -> None:
    """Every aggregate valid and aggregate ids unique."""
    for index, aggregate in enumerate(aggregates):
        validate_aggregate(aggregate, f"{path}[{index}]")
    require_unique([aggregate.id for aggregate in aggregates], path, "id", "aggregate id")


def validate_fleet(fleet: Fleet) -> None:
    """Every host and aggregate valid, host names and aggregate ids unique."""
    validate_hosts(fleet.hosts)
    validate_aggregates(fleet.aggregates)


def _inventory_to_json(inventory: Inventory) -> dict:
    return {"total": inventory.total, "reserved": inventory.reserved,
            "allocation_ratio": inventory.allocation_ratio, "min_unit": inventory.min_unit,
            "max_unit": inventory.max_unit, "step_size": inventory.step_size, "used": inventory.used}


def host_to_json(host: Host) -> dict:
    return {
        "name": host.name,
        "enabled": host.enabled,
        "up": host.up,
        "resources": {name: _inventory_to_json(inventory) for name, inventory in host.resources.items()},
        "traits": sorted(host.traits),
        "host_ip": host.host_ip,
        "hypervisor_type": host.hypervisor_type,
        "hypervisor_version": host.hypervisor_version,
        "supported_instances": [list(entry) for entry in host.supported_instances],
        "stats": dict(host.stats),
        "num_instances": host.num_instances,
        "num_io_ops": host.num_io_ops,
        "instances": list(host.instances),
        "metrics": dict(host.metrics),
        "failed_builds": host.failed_builds,
        "numa_cells": [numa_cell_to_json(cell) for cell in host.numa_cells],
        "pci_pools": [pci_pool_to_json(pool) for pool in host.pci_pools],
        "cpu_allocation_ratio": host.cpu_allocation_ratio,
        "ram_allocation_ratio": host.ram_allocation_ratio,
    }


def numa_cell_to_json(cell: NumaCell) -> dict:
    return {"id": cell.id, "cpuset": sorted(cell.cpuset), "pcpuset": sorted(cell.pcpuset), "memory": cell.memory,
            "cpu_usage": cell.cpu_usage, "memory_usage": cell.memory_usage, "pinned_cpus": sorted(cell.pinned_cpus),
            "siblings": [sorted(siblings) for siblings in cell.siblings],
            "mempages": [{"size_kb": pages.size_kb, "total": pages.total, "used": pages.used,
                          "reserved": pages.reserved} for pages in cell.mempages],
            "socket": cell.socket}


def pci_pool_to_json(pool: PciPool) -> dict:
    return {"vendor_id": pool.vendor_id, "product_id": pool.product_id, "dev_type": pool.dev_type,
            "numa_node": pool.numa_node, "count": pool.count, "tags": dict(pool.tags)}


def aggregate_to_json(aggregate: Aggregate) -> dict:
    return {"id": aggregate.id, "name": aggregate.name, "hosts": sorted(aggregate.hosts),
            "metadata": dict(aggregate.metadata)}


def fleet_to_json(fleet: Fleet) -> dict:
    return {"hosts": [host_to_json(host) for host in fleet.hosts],
            "aggregates": [aggregate_to_json(aggregate) for aggregate in fleet.aggregates]}


# ---- request ----

def request_from_json(obj: Any) -> Request:
    fields = _object(obj, "", REQUEST_KEYS)
    operation = _string(fields.get("operation", Operation.BOOT.value), "operation")
    try:
        operation = Operation(operation)
    except ValueError:
        raise InvalidField("operation", f"must be one of {', '.join(item.value for item in Operation)}") from None
    resources = {
        _resource_class(name, f"resources.{name}"): _integer(amount, f"resources.{name}", maximum=PLACEMENT_MAX_INT)
        for name, amount in _object(fields.get("resources", {}), "resources").items()
    }
    member_of = []
    for index, group in enumerate(_list(fields.get("member_of", []), "member_of")):
        ids = _list(group, f"member_of[{index}]")
        if not ids:
            raise InvalidField(f"member_of[{index}]", "must name at least one aggregate id")
        member_of.append(frozenset(_integer(item, f"member_of[{index}][{position}]", minimum=1)
                                   for position, item in enumerate(ids)))
    flavor = _object(fields.get("flavor", {}), "flavor", frozenset({"name", "extra_specs", "vcpus", "memory_mb"}))
    image = fields.get("image")
    if image is not None:
        image = _object(image, "image", frozenset({"id", "properties", "disk_format"}))
        image = Image(id=_string(image.get("id", ""), "image.id"),
                      properties=_string_map(image.get("properties", {}), "image.properties"),
                      disk_format=_string(image.get("disk_format", ""), "image.disk_format"))
    group = fields.get("server_group")
    return Request(
        operation=operation,
        resources=resources,
        required_traits=frozenset(_strings(fields.get("required_traits", []), "required_traits")),
        forbidden_traits=frozenset(_strings(fields.get("forbidden_traits", []), "forbidden_traits")),
        member_of=tuple(member_of),
        availability_zone=_optional_string(fields.get("availability_zone"), "availability_zone"),
        flavor=Flavor(name=_string(flavor.get("name", ""), "flavor.name"),
                      extra_specs=_string_map(flavor.get("extra_specs", {}), "flavor.extra_specs"),
                      vcpus=_integer(flavor.get("vcpus", 0), "flavor.vcpus", maximum=PLACEMENT_MAX_INT),
                      memory_mb=_integer(flavor.get("memory_mb", 0), "flavor.memory_mb", maximum=PLACEMENT_MAX_INT)),
        image=image,
        project_id=_string(fields.get("project_id", ""), "project_id"),
        instance_uuid=_string(fields.get("instance_uuid", ""), "instance_uuid"),
        scheduler_hints=_hints_from_json(fields.get("scheduler_hints", {})),
        server_group=None if group is None else _server_group_from_json(group),
        source_host=_string(fields.get("source_host", ""), "source_host"),
        num_instances=_integer(fields.get("num_instances", 1), "num_instances", minimum=1),
        profile=_string(fields.get("profile", ""), "profile"),
        ports=tuple(_port_from_json(item, f"ports[{index}]")
                    for index, item in enumerate(_list(fields.get("ports", []), "ports"))),
    )


def _port_from_json(obj: Any, path: str) -> Port:
    fields = _object(obj, path, PORT_KEYS)
    trusted = fields.get("trusted")
    return Port(vnic_type=_string(fields.get("vnic_type", Port.vnic_type), _join(path, "vnic_type")),
                physical_network=_string(fields.get("physical_network", ""), _join(path, "physical_network")),
                trusted=None if trusted is None else _boolean(trusted, _join(path, "trusted")),
                numa_affinity_policy=_string(fields.get("numa_affinity_policy", ""),
                                             _join(path, "numa_affinity_policy")))


def _hints_from_json(obj: Any) -> SchedulerHints:
    """Nova keeps every hint as a list of strings; a one-item list reads as its item."""
    hints = _object(obj, "scheduler_hints", frozenset(LIST_HINTS + SINGLE_VALUE_HINTS))
    values: dict[str, Any] = {}
    for name in LIST_HINTS:
        if name in hints:
            value = hints[name]
            path = f"scheduler_hints.{name}"
            values[name] = (_string(value, path),) if isinstance(value, str) else tuple(_strings(value, path))
    for name in SINGLE_VALUE_HINTS:
        if name in hints:
            value = hints[name]
            path = f"scheduler_hints.{name}"
            if isinstance(value, list):
                if len(value) != 1:
                    raise InvalidField(path, "must be a string or a list of one string")
                value = value[0]
            values[name] = _string(value, path)
    return SchedulerHints(**values)


def _server_group_from_json(obj: Any) -> ServerGroup:
    group = _object(obj, "server_group", frozenset({"policy", "members", "hosts", "rules"}))
    if "policy" not in group:
        raise InvalidField("server_group.policy", "is required")
    policy = GROUP_POLICIES.get(_string(group["policy"], "server_group.policy"))
    if policy is None:
        raise InvalidField("server_group.policy", f"must be one of {', '.join(GROUP_POLICIES)}")
    rules = _object(group.get("rules") or {}, "server_group.rules", frozenset({"max_server_per_host"}))
    return ServerGroup(
        policy=policy,
        members=tuple(_strings(group.get("members", []), "server_group.members")),
        hosts=tuple(_strings(group.get("hosts", []), "server_group.hosts")),
        max_server_per_host=_integer(rules.get("max_server_per_host", 1),
                                     "server_group.rules.max_server_per_host", minimum=1),
    )


def request_to_json(request: Request) -> dict:
    hints = request.scheduler_hints
    document = {
        "operation": request.operation.value,
        "resources": dict(request.resources),
        "required_traits": sorted(request.required_traits),
        "forbidden_traits": sorted(request.forbidden_traits),
        "member_of": [sorted(group) for group in request.member_of],
        "availability_zone": request.availability_zone,
        "flavor": {"name": request.flavor.name, "extra_specs": dict(request.flavor.extra_specs),
                   "vcpus": request.flavor.vcpus, "memory_mb": request.flavor.memory_mb},
        "image": None if request.image is None else {"id": request.image.id,
                                                     "properties": dict(request.image.properties),
                                                     "disk_format": request.image.disk_format},
        "project_id": request.project_id,
        "instance_uuid": request.instance_uuid,
        "scheduler_hints": {"same_host": list(hints.same_host), "different_host": list(hints.different_host),
                            "build_near_host_ip": hints.build_near_host_ip, "cidr": hints.cidr,
                            "query": hints.query},
        "source_host": request.source_host,
        "num_instances": request.num_instances,
        "profile": request.profile,
        "ports": [{"vnic_type": port.vnic_type, "physical_network": port.physical_network, "trusted": port.trusted,
                   "numa_affinity_policy": port.numa_affinity_policy} for port in request.ports],
    }
    if request.server_group is not None:
        group = request.server_group
        document["server_group"] = {"policy": group.policy.value, "members": list(group.members),
                                    "hosts": list(group.hosts),
                                    "rules": {"max_server_per_host": group.max_server_per_host}}
    return document
