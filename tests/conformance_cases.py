"""Turn a conformance case (../shared/conformance/*.jsonl) into the API's messages.

The translation is direct, JSON shape to message, without going through the
engine, so that the conformance suite tests the server's conversion too. A key
this module does not know raises, rather than being silently dropped.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from placecheck.v1 import fleet_pb2, placement_pb2

CONFORMANCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "conformance"

GROUP_POLICIES = {
    "": placement_pb2.SERVER_GROUP_POLICY_UNSPECIFIED,
    "affinity": placement_pb2.SERVER_GROUP_POLICY_AFFINITY,
    "anti-affinity": placement_pb2.SERVER_GROUP_POLICY_ANTI_AFFINITY,
    "soft-affinity": placement_pb2.SERVER_GROUP_POLICY_SOFT_AFFINITY,
    "soft-anti-affinity": placement_pb2.SERVER_GROUP_POLICY_SOFT_ANTI_AFFINITY,
}

OPERATIONS = {
    "boot": placement_pb2.OPERATION_BOOT,
    "live_migrate": placement_pb2.OPERATION_LIVE_MIGRATE,
    "cold_migrate": placement_pb2.OPERATION_COLD_MIGRATE,
    "resize": placement_pb2.OPERATION_RESIZE,
    "evacuate": placement_pb2.OPERATION_EVACUATE,
    "unshelve": placement_pb2.OPERATION_UNSHELVE,
}

def load_cases(path: Path | str) -> list[dict]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def load_case_files(names: Sequence[str]) -> list[dict]:
    """The cases of these files of CONFORMANCE_DIR, in order; [] when the data is absent."""
    return [case for name in names if (CONFORMANCE_DIR / name).exists()
            for case in load_cases(CONFORMANCE_DIR / name)]


def case_rules(case: dict) -> list[str]:
    """Every rule key the case expects a verdict for, in a stable order."""
    return sorted({rule for verdicts in case["expect"].values() for rule in verdicts})


def _check_keys(where: str, given: Iterable[str], known: Iterable[str]) -> None:
    unknown = set(given) - set(known)
    if unknown:
        raise KeyError(f"{where}: keys not translated: {sorted(unknown)}")


def _inventory(where: str, inventory: dict) -> fleet_pb2.Inventory:
    _check_keys(where, inventory, fleet_pb2.Inventory.DESCRIPTOR.fields_by_name)
    return fleet_pb2.Inventory(**inventory)


def _numa_cell(where: str, cell: dict) -> fleet_pb2.NumaCell:
    _check_keys(where, cell, fleet_pb2.NumaCell.DESCRIPTOR.fields_by_name)
    message = fleet_pb2.NumaCell(
        **{key: value for key, value in cell.items() if key not in ("siblings", "mempages", "socket")},
        siblings=[fleet_pb2.CpuSiblings(cpus=cpus) for cpus in cell.get("siblings", [])],
        mempages=[fleet_pb2.MemPages(**pages) for pages in cell.get("mempages", [])])
    if cell.get("socket") is not None:
        message.socket = cell["socket"]
    return message


def _pci_pool(where: str, pool: dict) -> fleet_pb2.PciPool:
    _check_keys(where, pool, fleet_pb2.PciPool.DESCRIPTOR.fields_by_name)
    message = fleet_pb2.PciPool(**{key: value for key, value in pool.items() if key != "numa_node"})
    if pool.get("numa_node") is not None:
        message.numa_node = pool["numa_node"]
    return message


# The NUMA/PCI cases name a host's cells and pools as Nova's HostState does.
NOVA_HOST_KEYS = {"numa_topology": "numa_cells", "pci_device_pools": "pci_pools"}


def _host(host: dict) -> fleet_pb2.Host:
    where = f"host {host.get('name')!r}"
    host = {NOVA_HOST_KEYS.get(key, key): value for key, value in host.items()}
    _check_keys(where, host, fleet_pb2.Host.DESCRIPTOR.fields_by_name)
    message = fleet_pb2.Host(
        name=host["name"],
        resources={rc: _inventory(f"{where} resource {rc}", inv)
                   for rc, inv in host.get("resources", {}).items()},
        traits=host.get("traits", []),
        host_ip=host.get("host_ip", ""),
        hypervisor_type=host.get("hypervisor_type", ""),
        supported_instances=[fleet_pb2.SupportedInstance(architecture=arch, hypervisor_type=hv_type,
                                                         vm_mode=vm_mode)
                             for arch, hv_type, vm_mode in host.get("supported_instances", [])],
        stats={key: str(value) for key, value in host.get("stats", {}).items()},
        num_instances=host.get("num_instances", 0),
        num_io_ops=host.get("num_io_ops", 0),
        instances=host.get("instances", []),
        metrics=host.get("metrics", {}),
        failed_builds=host.get("failed_builds", 0),
        numa_cells=[_numa_cell(f"{where} numa cell {index}", cell)
                    for index, cell in enumerate((host.get("numa_cells") or {}).get("cells", []))],
        pci_pools=[_pci_pool(f"{where} pci pool {index}", pool)
                   for index, pool in enumerate(host.get("pci_pools") or [])],
    )
    # Optional fields: absent (or null) keeps Nova's default, so leave them unset.
    for optional in ("enabled", "up", "hypervisor_version", "cpu_allocation_ratio", "ram_allocation_ratio"):
        if host.get(optional) is not None:
            setattr(message, optional, host[optional])
    return message


def _aggregate(aggregate: dict) -> fleet_pb2.Aggregate:
    _check_keys(f"aggregate {aggregate.get('id')!r}", aggregate, fleet_pb2.Aggregate.DESCRIPTOR.fields_by_name)
    return fleet_pb2.Aggregate(**aggregate)


def case_fleet_proto(case: dict) -> fleet_pb2.Fleet:
    return fleet_pb2.Fleet(hosts=[_host(host) for host in case["hosts"]],
                           aggregates=[_aggregate(aggregate) for aggregate in case.get("aggregates", [])])


def _uuid_list(value: str | list[str]) -> list[str]:
    """Nova accepts a hint as one string or a list of them."""
    return [value] if isinstance(value, str) else list(value)


def _scheduler_hints(hints: dict) -> placement_pb2.SchedulerHints:
    _check_keys("scheduler_hints", hints, placement_pb2.SchedulerHints.DESCRIPTOR.fields_by_name)
    return placement_pb2.SchedulerHints(
        same_host=_uuid_list(hints.get("same_host", [])),
        different_host=_uuid_list(hints.get("different_host", [])),
        build_near_host_ip=hints.get("build_near_host_ip", ""),
        cidr=hints.get("cidr", ""),
        query=hints.get("query", ""),
    )


def _server_group(group: dict) -> placement_pb2.ServerGroup:
    _check_keys("server_group", group, ("policy", "members", "hosts", "rules"))
    _check_keys("server_group.rules", group.get("rules", {}), ("max_server_per_host",))
    message = placement_pb2.ServerGroup(policy=GROUP_POLICIES[group.get("policy", "")],
                                        members=group.get("members", []), hosts=group.get("hosts", []))
    if "max_server_per_host" in group.get("rules", {}):
        message.max_server_per_host = int(group["rules"]["max_server_per_host"])
    return message


def _property_text(value) -> str:
    """An image property as Glance's API gives it: a string (the NUMA/PCI cases write numbers)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _port(port: dict) -> placement_pb2.Port:
    _check_keys("port", port, placement_pb2.Port.DESCRIPTOR.fields_by_name)
    return placement_pb2.Port(**port)


def case_request_proto(case: dict) -> placement_pb2.PlacementRequest:
    """The case's request, deciding with the profile named after the case."""
    request = case["request"]
    _check_keys("request", request, placement_pb2.PlacementRequest.DESCRIPTOR.fields_by_name)
    flavor = request.get("flavor", {})
    _check_keys("flavor", flavor, placement_pb2.Flavor.DESCRIPTOR.fields_by_name)
    message = placement_pb2.PlacementRequest(
        operation=OPERATIONS[request["operation"]] if "operation" in request else None,
        resources=request.get("resources", {}),
        required_traits=request.get("required_traits", []),
        forbidden_traits=request.get("forbidden_traits", []),
        member_of=[placement_pb2.AggregateSet(aggregate_ids=ids) for ids in request.get("member_of", [])],
        availability_zone=request.get("availability_zone") or "",
        flavor=placement_pb2.Flavor(**flavor),
        ports=[_port(port) for port in request.get("ports", [])],
        project_id=request.get("project_id", ""),
        instance_uuid=request.get("instance_uuid", ""),
        source_host=request.get("source_host") or "",
        num_instances=request.get("num_instances", 0),
        profile=case["name"],
    )
    # Absent image means none (boot from volume); a present one, even without properties, is sent.
    if request.get("image") is not None:
        image = request["image"]
        _check_keys("image", image, ("id", "properties"))
        properties = {name: _property_text(value) for name, value in image.get("properties", {}).items()}
        message.image.CopyFrom(placement_pb2.Image(id=image.get("id", ""), properties=properties))
    if request.get("scheduler_hints"):
        message.scheduler_hints.CopyFrom(_scheduler_hints(request["scheduler_hints"]))
    if request.get("server_group"):
        message.server_group.CopyFrom(_server_group(request["server_group"]))
    return message


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # A JSON string literal is a valid TOML basic string (same escapes).
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def profile_toml(cases: Sequence[dict], enabled_filters: Sequence[str]) -> str:
    """A config file with one profile per case, named after it, holding the
    case's `config` (Nova option names) and `enabled_filters` (unless the case's
    config names its own); the first case's profile is the default."""
    lines = [f"default_profile = {_toml_value(cases[0]['name'])}", ""]
    for case in cases:
        config = {"enabled_filters": list(enabled_filters), **case["config"]}
        if "pci_alias" in config:  # nova.conf's [pci] alias: one JSON object per entry
            config["pci_alias"] = [json.dumps(alias) for alias in config["pci_alias"]]
        lines.append(f"[profiles.{_toml_value(case['name'])}]")
        lines.extend(f"{option} = {_toml_value(value)}" for option, value in sorted(config.items()))
        lines.append("")
    return "\n".join(lines)
