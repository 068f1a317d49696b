"""engine.pci against Nova 34.0.0's own answers: every case of
../shared/conformance-numa-pci/nova-numa-pci.jsonl, in process.

PciPassthroughFilter's verdict is `supports(host.pci_pools, pci_requests(...))` (NUMA ignored)
when the request asks PCI devices, else a pass; a case Nova's API refuses with a PCI exception
must make pci_requests raise InvalidField.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from placecheck_engine import pci
from placecheck_engine.model import (Flavor, Host, Image, InvalidField, MemPages, NumaCell, PciPool, Port,
                                     Request)

CASES_FILE = Path(__file__).resolve().parents[2] / "shared" / "conformance-numa-pci" / "nova-numa-pci.jsonl"
CASES = [json.loads(line) for line in CASES_FILE.read_text().splitlines() if line.strip()] \
    if CASES_FILE.exists() else []
# The exceptions Nova's API raises while building the PCI requests.
PCI_EXCEPTIONS = {"PciRequestAliasNotDefined", "PciInvalidAlias", "ImagePCINUMAPolicyForbidden",
                  "InvalidPCINUMAAffinity"}


def _host(host: dict) -> Host:
    cells = tuple(
        NumaCell(id=cell["id"], cpuset=frozenset(cell.get("cpuset", ())), pcpuset=frozenset(cell.get("pcpuset", ())),
                 memory=cell.get("memory", 0), cpu_usage=cell.get("cpu_usage", 0),
                 memory_usage=cell.get("memory_usage", 0), pinned_cpus=frozenset(cell.get("pinned_cpus", ())),
                 siblings=tuple(frozenset(s) for s in cell.get("siblings", ())),
                 mempages=tuple(MemPages(**pages) for pages in cell.get("mempages", ())), socket=cell.get("socket"))
        for cell in (host.get("numa_topology") or {}).get("cells", ()))
    pools = tuple(PciPool(**pool) for pool in host.get("pci_device_pools", ()))
    return Host(name=host["name"], numa_cells=cells, pci_pools=pools)


def _glance_text(value) -> str:
    """Glance hands Nova every property as a string."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _request(case: dict) -> Request:
    request = case["request"]
    flavor = request["flavor"]
    image = request.get("image")
    return Request(
        flavor=Flavor(name=flavor.get("name", ""), extra_specs=dict(flavor.get("extra_specs", {})),
                      vcpus=flavor.get("vcpus", 0), memory_mb=flavor.get("memory_mb", 0)),
        image=Image(id=image.get("id", ""), properties={key: _glance_text(value) for key, value
                                                       in image.get("properties", {}).items()}) if image else None,
        ports=tuple(Port(vnic_type=port.get("vnic_type", "normal"), physical_network=port.get("physical_network", ""),
                         trusted=port.get("trusted"), numa_affinity_policy=port.get("numa_affinity_policy", ""))
                    for port in request.get("ports") or ()))


def _aliases(case: dict) -> dict[str, pci.Alias]:
    return pci.parse_aliases(tuple(json.dumps(entry) for entry in case["config"].get("pci_alias", ())))


def _filter_verdict(host: Host, requests) -> bool:
    return pci.supports(host.pci_pools, requests) if requests else True


VALID = [case for case in CASES if not case.get("expect_invalid")]
PCI_INVALID = [case for case in CASES if case.get("invalid_exception") in PCI_EXCEPTIONS]


def test_the_cases_are_there():
    assert len(CASES) == 150 and len(VALID) == 132 and PCI_INVALID


@pytest.mark.parametrize("case", VALID, ids=[case["name"] for case in VALID])
def test_pci_passthrough_filter_agrees_with_nova(case):
    requests = pci.pci_requests(_request(case), _aliases(case))
    verdicts = {host["name"]: _filter_verdict(_host(host), requests) for host in case["hosts"]}
    expected = {name: rules["PciPassthroughFilter"] for name, rules in case["expect"].items()}
    assert verdicts == expected


@pytest.mark.parametrize("case", PCI_INVALID, ids=[case["name"] for case in PCI_INVALID])
def test_nova_refuses_the_pci_request(case):
    with pytest.raises(InvalidField) as refused:
        pci.pci_requests(_request(case), _aliases(case))
    assert refused.value.field.startswith("request.")


@pytest.mark.parametrize("case", VALID, ids=[case["name"] for case in VALID])
def test_explanations_and_bounds_agree_with_the_verdict(case):
    """unmet_request names a request exactly where the filter fails; the free devices of the
    pools that serve a request (the per-host bound) never refuse a host Nova passes."""
    requests = pci.pci_requests(_request(case), _aliases(case))
    for host in map(_host, case["hosts"]):
        passed = _filter_verdict(host, requests)
        unmet = pci.unmet_request(host.pci_pools, requests)
        assert (unmet is None) == passed
        if unmet:
            request, free = unmet
            assert free < request.count or free == 0
            assert pci.describe_unmet(request, free).startswith(f"{request.requester} needs {request.count} ")
        bound_passes = all(sum(pool.count for pool in host.pci_pools if pci.serves(pool, request)) >= request.count
                           for request in requests)
        assert bound_passes or not passed


def test_describe_unmet():
    request = pci.PciRequest(2, ({"vendor_id": "10de", "product_id": "1eb8", "dev_type": "type-PCI"},), "gpu",
                             "legacy", "alias gpu")
    assert pci.describe_unmet(request, 1) == \
        "alias gpu needs 2 devices (vendor 10de product 1eb8, type-PCI); the host has 1 free"
    port = pci.PciRequest(1, ({"physical_network": "physnet1", "remote_managed": "True", "trusted": "True"},), "",
                          "legacy", "port 0")
    assert pci.describe_unmet(port, 0) == \
        "port 0 needs 1 device (physical_network physnet1, remote-managed, trusted true); the host has 0 free"
