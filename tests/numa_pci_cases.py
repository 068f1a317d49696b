"""The NUMA and PCI conformance cases (../shared/conformance-numa-pci/) as engine.model values.

case_fleet, case_request and case_profile translate a case's JSON (format in that folder's
README.md) directly, each missing key taking Nova's default as the README says; a key this
module does not know raises rather than being dropped.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from placecheck_engine.model import Fleet, Flavor, Host, Image, MemPages, NumaCell, PciPool, Port, Request

CASES_PATH = Path(__file__).resolve().parents[2] / "shared" / "conformance-numa-pci" / "nova-numa-pci.jsonl"


def load_cases() -> list[dict]:
    """The cases, in order; [] when the data is absent."""
    if not CASES_PATH.exists():
        return []
    return [json.loads(line) for line in CASES_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]


def _check_keys(where: str, given: Iterable[str], known: Iterable[str]) -> None:
    unknown = set(given) - set(known)
    if unknown:
        raise KeyError(f"{where}: keys not translated: {sorted(unknown)}")


def _cell(where: str, cell: dict) -> NumaCell:
    _check_keys(where, cell, ("id", "cpuset", "pcpuset", "memory", "cpu_usage", "memory_usage", "pinned_cpus",
                              "siblings", "mempages", "socket"))
    for pages in cell.get("mempages", ()):
        _check_keys(f"{where} mempages", pages, ("size_kb", "total", "used", "reserved"))
    return NumaCell(id=cell["id"], cpuset=frozenset(cell.get("cpuset", ())), pcpuset=frozenset(cell.get("pcpuset", ())),
                    memory=cell.get("memory", 0), cpu_usage=cell.get("cpu_usage", 0),
                    memory_usage=cell.get("memory_usage", 0), pinned_cpus=frozenset(cell.get("pinned_cpus", ())),
                    siblings=tuple(frozenset(siblings) for siblings in cell.get("siblings", ())),
                    mempages=tuple(MemPages(**pages) for pages in cell.get("mempages", ())),
                    socket=cell.get("socket"))


def _pool(where: str, pool: dict) -> PciPool:
    _check_keys(where, pool, ("vendor_id", "product_id", "dev_type", "numa_node", "count", "tags"))
    return PciPool(vendor_id=pool["vendor_id"], product_id=pool["product_id"],
                   dev_type=pool.get("dev_type", "type-PCI"), numa_node=pool.get("numa_node"),
                   count=pool.get("count", 0), tags=dict(pool.get("tags", {})))


def case_host(host: dict) -> Host:
    where = f"host {host.get('name')!r}"
    _check_keys(where, host, ("name", "numa_topology", "pci_device_pools", "cpu_allocation_ratio",
                              "ram_allocation_ratio"))
    topology = host.get("numa_topology") or {}
    _check_keys(f"{where} numa_topology", topology, ("cells",))
    return Host(name=host["name"],
                numa_cells=tuple(_cell(f"{where} cell {index}", cell)
                                 for index, cell in enumerate(topology.get("cells", ()))),
                pci_pools=tuple(_pool(f"{where} pool {index}", pool)
                                for index, pool in enumerate(host.get("pci_device_pools") or ())),
                # Absent: the profile's ratio (case_profile carries the case's config).
                cpu_allocation_ratio=host.get("cpu_allocation_ratio"),
                ram_allocation_ratio=host.get("ram_allocation_ratio"))


def case_fleet(case: dict) -> Fleet:
    return Fleet(hosts=tuple(case_host(host) for host in case["hosts"]))


def _glance_text(value) -> str:
    """Glance hands Nova every image property as a string."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def case_request(case: dict) -> Request:
    request = case["request"]
    _check_keys("request", request, ("flavor", "image", "ports"))
    flavor = request.get("flavor", {})
    _check_keys("flavor", flavor, ("name", "vcpus", "memory_mb", "extra_specs"))
    image = request.get("image")
    if image is not None:
        _check_keys("image", image, ("id", "properties"))
    for index, port in enumerate(request.get("ports") or ()):
        _check_keys(f"port {index}", port, ("vnic_type", "physical_network", "trusted", "numa_affinity_policy"))
    return Request(
        flavor=Flavor(name=flavor.get("name", ""), extra_specs=dict(flavor.get("extra_specs", {})),
                      vcpus=flavor.get("vcpus", 0), memory_mb=flavor.get("memory_mb", 0)),
        image=None if image is None else Image(
            id=image.get("id", ""),
            properties={key: _glance_text(value) for key, value in image.get("properties", {}).items()}),
        ports=tuple(Port(vnic_type=port.get("vnic_type", "normal"), physical_network=port.get("physical_network") or "",
                         trusted=port.get("trusted"), numa_affinity_policy=port.get("numa_affinity_policy") or "")
                    for port in request.get("ports") or ()))


def case_profile(case: dict) -> dict:
    """The case's config as profile options (Profile.from_options): each [pci] alias entry as
    the JSON string nova.conf holds."""
    config = case["config"]
    _check_keys("config", config, ("cpu_allocation_ratio", "ram_allocation_ratio", "pci_alias",
                                   "packing_host_numa_cells_allocation_strategy"))
    options = {key: value for key, value in config.items() if key != "pci_alias"}
    options["pci_alias"] = tuple(json.dumps(entry) for entry in config.get("pci_alias", ()))
    return options
