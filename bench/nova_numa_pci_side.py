"""Runs inside bench/.venv-nova: Nova's own NUMATopologyFilter and PciPassthroughFilter over a fleet.

Reads a JSON payload (argv[1]): `hosts` shaped as the NUMA/PCI conformance cases' hosts
(../shared/conformance-numa-pci/README.md: numa_topology cells, pci_device_pools, the host's
cpu/ram allocation ratios), `pci_alias` (Nova's [pci] alias entries, one object each),
`requests` (name -> flavor, image, ports) and `repeats`. Builds one HostState per host as
Nova's host manager does from a compute node (NUMATopology, PciDeviceStats over its
PciDevicePoolList, the ratios, one allocation candidate) and, per request, the RequestSpec
Nova's API builds (hardware.numa_get_constraints, get_pci_requests_from_flavor with the PCI
NUMA affinity policy, one InstancePCIRequest per SR-IOV port as Neutron's
create_resource_requests makes it). Times only the two filters' host_passes, each on every
host. Prints JSON: per request, the seconds of each repeat and the hosts each filter passed.

Imports nothing from placecheck: Nova's venv has only Nova.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import uuid

import nova.conf
from nova import objects

objects.register_all()
CONF = nova.conf.CONF
CONF([], project="nova", default_config_files=[])
logging.disable(logging.CRITICAL)  # per-host debug logging would be timed, not filtering

from nova.network import model as network_model  # noqa: E402  (needs CONF parsed)
from nova.pci import request as pci_request  # noqa: E402
from nova.pci import stats as pci_stats  # noqa: E402
from nova.scheduler import host_manager  # noqa: E402
from nova.scheduler.filters import numa_topology_filter, pci_passthrough_filter  # noqa: E402
from nova.virt import hardware  # noqa: E402



def numa_topology(cells: list[dict]) -> objects.NUMATopology:
    return objects.NUMATopology(cells=[objects.NUMACell(
        id=cell["id"], cpuset=set(cell["cpuset"]), pcpuset=set(cell["pcpuset"]), memory=cell["memory"],
        cpu_usage=cell["cpu_usage"], memory_usage=cell["memory_usage"], pinned_cpus=set(cell["pinned_cpus"]),
        siblings=[set(siblings) for siblings in cell["siblings"]],
        mempages=[objects.NUMAPagesTopology(**pages) for pages in cell["mempages"]],
        socket=cell["socket"]) for cell in cells])


def host_state(host: dict) -> host_manager.HostState:
    state = host_manager.HostState(host["name"], host["name"], None)
    topology = host.get("numa_topology")
    state.numa_topology = numa_topology(topology["cells"]) if topology else None
    pools = objects.PciDevicePoolList(objects=[
        objects.PciDevicePool.from_dict({"vendor_id": pool["vendor_id"], "product_id": pool["product_id"],
                                         "numa_node": pool["numa_node"], "count": pool["count"],
                                         "dev_type": pool["dev_type"], **pool["tags"]})
        for pool in host.get("pci_device_pools", ())])
    state.pci_stats = pci_stats.PciDeviceStats(state.numa_topology, stats=pools)
    state.cpu_allocation_ratio = host["cpu_allocation_ratio"]
    state.ram_allocation_ratio = host["ram_allocation_ratio"]
    return state


def host_passes(filter_, host: host_manager.HostState, spec: objects.RequestSpec) -> bool:
    """The filter's verdict on the host as a new request finds it: Placement's one allocation
    candidate, no PCI in Placement (a filter keeps only the candidates it passes, on the host)."""
    host.allocation_candidates = [{"mappings": {}}]
    return filter_.host_passes(host, spec)


def port_requests(ports: list[dict], affinity_policy: str | None) -> list[objects.InstancePCIRequest]:
    """One device per SR-IOV port, spec'd as network.neutron.API.create_resource_requests does."""
    requests = []
    for port in ports:
        vnic_type = port["vnic_type"]
        if vnic_type not in network_model.VNIC_TYPES_SRIOV:
            continue
        spec = {pci_request.PCI_NET_TAG: port["physical_network"] or None,
                pci_request.PCI_REMOTE_MANAGED_TAG: str(vnic_type == network_model.VNIC_TYPE_REMOTE_MANAGED)}
        dev_type = pci_request.DEVICE_TYPE_FOR_VNIC_TYPE.get(vnic_type)
        if dev_type:
            spec[pci_request.PCI_DEVICE_TYPE_TAG] = dev_type
        if port.get("trusted") is not None:
            spec[pci_request.PCI_TRUSTED_TAG] = str(port["trusted"])
        request = objects.InstancePCIRequest(count=1, spec=[spec], request_id=str(uuid.UUID(int=len(requests))))
        policy = port.get("numa_affinity_policy") or affinity_policy
        if policy:
            request.numa_policy = policy
        requests.append(request)
    return requests


def request_spec(request: dict) -> objects.RequestSpec:
    flavor_ = request["flavor"]
    flavor = objects.Flavor(name=flavor_["name"], vcpus=flavor_["vcpus"], memory_mb=flavor_["memory_mb"],
                            root_gb=0, ephemeral_gb=0, swap=0, extra_specs=dict(flavor_["extra_specs"]))
    image = objects.ImageMeta.from_dict({"properties": dict(request.get("image_properties", {}))})
    affinity_policy = hardware.get_pci_numa_policy_constraint(flavor, image)
    pci_requests = pci_request.get_pci_requests_from_flavor(flavor, affinity_policy=affinity_policy)
    pci_requests.requests.extend(port_requests(request.get("ports", []), affinity_policy))
    return objects.RequestSpec(flavor=flavor, image=image, numa_topology=hardware.numa_get_constraints(flavor, image),
                               pci_requests=pci_requests, instance_uuid="00000000-0000-4000-8000-000000000000")


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as source:
        payload = json.load(source)
    CONF.set_override("alias", [json.dumps(alias) for alias in payload["pci_alias"]], group="pci")
    hosts = [host_state(host) for host in payload["hosts"]]
    numa_filter = numa_topology_filter.NUMATopologyFilter()
    pci_filter = pci_passthrough_filter.PciPassthroughFilter()
    results = {}
    for name, request in payload["requests"].items():
        spec = request_spec(request)
        seconds = []
        for _ in range(payload["repeats"]):
            started = time.perf_counter()
            numa_passed = [host_passes(numa_filter, host, spec) for host in hosts]
            pci_passed = [host_passes(pci_filter, host, spec) for host in hosts]
            seconds.append(time.perf_counter() - started)
        results[name] = {
            "seconds": seconds,
            "NUMATopologyFilter": [host.host for host, passed in zip(hosts, numa_passed) if passed],
            "PciPassthroughFilter": [host.host for host, passed in zip(hosts, pci_passed) if passed],
        }
    json.dump({"requests": results, "nova_version": nova_version()}, sys.stdout)


def nova_version() -> str:
    from importlib.metadata import version
    return version("nova")


if __name__ == "__main__":
    main()
