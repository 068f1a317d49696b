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
    Host, Image, InvalidField, Inventory, Operation, Request, SchedulerHints, ServerGroup, host_at, require_unique,
)

INT64_MAX = 2**63 - 1
RESOURCE_CLASS_PATTERN = re.compile(r"[A-Z0-9_]+")  # Placement's resource class names

HOST_KEYS = frozenset({
    "name", "enabled", "up", "resources", "traits", "host_ip", "hypervisor_type", "hypervisor_version",
    "supported_instances", "stats", "num_instances", "num_io_ops", "instances", "metrics", "failed_builds",
})
INVENTORY_KEYS = frozenset({"total", "reserved", "allocation_ratio", "min_unit", "max_unit", "step_size", "used"})
AGGREGATE_KEYS = frozenset({"id", "name", "hosts", "metadata"})
REQUEST_KEYS = frozenset({
    "operation", "resources", "required_traits", "forbidden_traits", "member_of", "availability_zone",
    "flavor", "image", "project_id", "instance_uuid", "scheduler_hints", "server_group", "source_host",
    "num_instances", "profile",
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
    }


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
    flavor = _object(fields.get("flavor", {}), "flavor", frozenset({"name", "extra_specs"}))
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
                      extra_specs=_string_map(flavor.get("extra_specs", {}), "flavor.extra_specs")),
        image=image,
        project_id=_string(fields.get("project_id", ""), "project_id"),
        instance_uuid=_string(fields.get("instance_uuid", ""), "instance_uuid"),
        scheduler_hints=_hints_from_json(fields.get("scheduler_hints", {})),
        server_group=None if group is None else _server_group_from_json(group),
        source_host=_string(fields.get("source_host", ""), "source_host"),
        num_instances=_integer(fields.get("num_instances", 1), "num_instances", minimum=1),
        profile=_string(fields.get("profile", ""), "profile"),
    )


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
        "flavor": {"name": request.flavor.name, "extra_specs": dict(request.flavor.extra_specs)},
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
    }
    if request.server_group is not None:
        group = request.server_group
        document["server_group"] = {"policy": group.policy.value, "members": list(group.members),
                                    "hosts": list(group.hosts),
                                    "rules": {"max_server_per_host": group.max_server_per_host}}
    return document
