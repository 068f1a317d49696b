"""engine.pci against Nova 34.0.0's own answers: every case of
../shared/conformance-numa-pci/nova-numa-pci.jsonl, in process.

PciPassthroughFilter's verdict is `supports(host.pci_pools, pci_requests(...))` (NUMA ignored)
when the request asks PCI devices, else a pass; a case Nova's API refuses with a PCI exception
must make pci_requests raise InvalidField.
"""
from __future__ import annotations

import pytest

from numa_pci_cases import case_fleet, case_profile, case_request, load_cases
from placecheck_engine import pci
from placecheck_engine.config import Profile
from placecheck_engine.model import Host, InvalidField

CASES = load_cases()
# The exceptions Nova's API raises while building the PCI requests.
PCI_EXCEPTIONS = {"PciRequestAliasNotDefined", "PciInvalidAlias", "ImagePCINUMAPolicyForbidden",
                  "InvalidPCINUMAAffinity"}


def _aliases(case: dict) -> dict[str, pci.Alias]:
    """The profile's aliases: loading the case's config runs Nova's alias validation."""
    return pci.parse_aliases(Profile.from_options("case", case_profile(case)).pci_alias)


def _filter_verdict(host: Host, requests) -> bool:
    return pci.supports(host.pci_pools, requests) if requests else True


VALID = [case for case in CASES if not case.get("expect_invalid")]
PCI_INVALID = [case for case in CASES if case.get("invalid_exception") in PCI_EXCEPTIONS]


def test_the_cases_are_there():
    assert len(CASES) == 150 and len(VALID) == 132 and PCI_INVALID


@pytest.mark.parametrize("case", VALID, ids=[case["name"] for case in VALID])
def test_pci_passthrough_filter_agrees_with_nova(case):
    requests = pci.pci_requests(case_request(case), _aliases(case))
    verdicts = {host.name: _filter_verdict(host, requests) for host in case_fleet(case).hosts}
    expected = {name: rules["PciPassthroughFilter"] for name, rules in case["expect"].items()}
    assert verdicts == expected


@pytest.mark.parametrize("case", PCI_INVALID, ids=[case["name"] for case in PCI_INVALID])
def test_nova_refuses_the_pci_request(case):
    with pytest.raises(InvalidField) as refused:
        pci.pci_requests(case_request(case), _aliases(case))
    assert refused.value.field.startswith("request.")


@pytest.mark.parametrize("case", VALID, ids=[case["name"] for case in VALID])
def test_explanations_and_bounds_agree_with_the_verdict(case):
    """unmet_request names a request exactly where the filter fails; the free devices of the
    pools that serve a request (the per-host bound) never refuse a host Nova passes."""
    requests = pci.pci_requests(case_request(case), _aliases(case))
    for host in case_fleet(case).hosts:
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
