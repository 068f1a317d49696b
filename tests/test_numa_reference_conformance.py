"""engine.numa against Nova 34.0.0's own answers: every case of
../shared/conformance-numa-pci/nova-numa-pci.jsonl, in process.

NUMATopologyFilter's verdict on each host is numa_topology_passes; a case Nova's API refuses
(`expect_invalid`) must make guest_topology (or, for a PCI refusal, pci_requests) raise
InvalidField, naming Nova's exception for the NUMA ones. Then consume() on the cases' fits, and
the explanations of a few hand-built refusals.
"""
from __future__ import annotations

import pytest

from numa_pci_cases import case_fleet, case_profile, case_request, load_cases
from placecheck_engine import numa, pci
from placecheck_engine.config import Profile
from placecheck_engine.model import Flavor, Host, InvalidField, MemPages, NumaCell, PciPool, Request

CASES = load_cases()
if not CASES:
    pytest.skip("NUMA/PCI conformance data not found", allow_module_level=True)
SCHEDULED = [case for case in CASES if not case.get("expect_invalid")]
REFUSED = [case for case in CASES if case.get("expect_invalid")]
# Nova's exceptions raised while building the PCI requests (engine.pci's to name).
PCI_EXCEPTIONS = {"PciRequestAliasNotDefined", "PciInvalidAlias", "ImagePCINUMAPolicyForbidden",
                  "InvalidPCINUMAAffinity"}


def _profile(case: dict) -> Profile:
    return Profile.from_options(case["name"], case_profile(case))


@pytest.mark.parametrize("case", SCHEDULED, ids=lambda case: case["name"])
def test_numa_topology_filter_agrees_with_nova(case):
    profile, request = _profile(case), case_request(case)
    wrong = {}
    for host in case_fleet(case).hosts:
        nova_passes = case["expect"][host.name]["NUMATopologyFilter"]
        if numa.numa_topology_passes(host, request, profile) != nova_passes:
            wrong[host.name] = (nova_passes, numa.check(host, request, profile))
    assert not wrong, f"(Nova's verdict, ours) per host: {wrong}"


@pytest.mark.parametrize("case", SCHEDULED, ids=lambda case: case["name"])
def test_a_host_that_fails_says_why(case):
    """A refusal carries a reason code and an explanation with numbers; a pass with a guest
    topology places each guest cell on a distinct host cell."""
    profile, request = _profile(case), case_request(case)
    reasons = {value for name, value in vars(numa).items() if name.startswith("NUMA_")}
    for host in case_fleet(case).hosts:
        verdict = numa.check(host, request, profile)
        if isinstance(verdict, numa.Misfit):
            assert verdict.reason in reasons
            assert any(character.isdigit() for character in verdict.explanation), verdict.explanation
        elif verdict is not None:
            chosen = [placement.host_cell for placement in verdict.cells]
            assert len(set(chosen)) == len(chosen) == len(numa.guest_topology(request, profile).cells)
            assert set(chosen) <= {cell.id for cell in host.numa_cells}


@pytest.mark.parametrize("case", REFUSED, ids=lambda case: case["name"])
def test_a_request_nova_refuses_is_invalid(case):
    profile, request = _profile(case), case_request(case)
    exception = case["invalid_exception"]
    with pytest.raises(InvalidField) as refusal:
        numa.guest_topology(request, profile)
        pci.pci_requests(request, pci.parse_aliases(profile.pci_alias))
    assert refusal.value.field.startswith(("request.flavor.extra_specs[", "request.image.properties[",
                                           "request.ports["))
    if exception not in PCI_EXCEPTIONS:
        assert exception in refusal.value.description


def test_every_case_is_checked():
    """The data is whole: 150 cases, 18 of them refused by Nova's API."""
    assert (len(CASES), len(REFUSED)) == (150, 18)


@pytest.mark.parametrize("case", [case for case in SCHEDULED if case["request"]["flavor"]["extra_specs"]
                                  .get("hw:cpu_policy") == "dedicated"][:20], ids=lambda case: case["name"])
def test_consuming_a_fit_takes_its_cpus_and_memory(case):
    """consume() takes the pinned CPUs and memory of a Fit: the cells' free dedicated CPUs
    drop by the guest's pinned vCPUs, their memory use rises by the guest's memory."""
    profile, request = _profile(case), case_request(case)
    for host in case_fleet(case).hosts:
        verdict = numa.check(host, request, profile)
        if not isinstance(verdict, numa.Fit):
            continue
        after = numa.consume(host, verdict)
        before_cells = {cell.id: cell for cell in host.numa_cells}
        for placement in verdict.cells:
            cell = next(cell for cell in after.numa_cells if cell.id == placement.host_cell)
            before = before_cells[cell.id]
            taken = {host_cpu for _vcpu, host_cpu in placement.pinning}
            assert taken <= cell.pinned_cpus and not taken & before.pinned_cpus
            assert cell.memory_usage == before.memory_usage + placement.memory


@pytest.mark.parametrize("case", [case for case in SCHEDULED if "pci_passthrough:alias" in
                                  case["request"]["flavor"]["extra_specs"] or case["request"].get("ports")],
                         ids=lambda case: case["name"])
def test_consuming_a_fit_takes_its_pci_devices(case):
    """consume() also takes the PCI devices the Fit's requests asked for, from pools the guest's
    cells may use: the host's free devices drop by the requests' counts."""
    profile, request = _profile(case), case_request(case)
    for host in case_fleet(case).hosts:
        verdict = numa.check(host, request, profile)
        if not isinstance(verdict, numa.Fit) or not verdict.pci_requests:
            continue
        after = numa.consume(host, verdict)
        asked = sum(pci_request.count for pci_request in verdict.pci_requests)
        assert sum(pool.count for pool in after.pci_pools) == sum(pool.count for pool in host.pci_pools) - asked


# Explanations: which guest cell fits nowhere, why, with the numbers.

def _cell(cell_id, cpus, memory=4096, pinned=(), threads=1, legacy=True, **fields):
    cpus = list(cpus)
    siblings = tuple(frozenset(cpus[i:i + threads]) for i in range(0, len(cpus), threads))
    return NumaCell(id=cell_id, cpuset=frozenset(cpus) if legacy else frozenset(), pcpuset=frozenset(cpus),
                    memory=memory, pinned_cpus=frozenset(pinned), siblings=siblings, socket=0, **fields)


def _why(cells, extra_specs, vcpus=8, memory=2048, pci_pools=(), pci_alias=()):
    request = Request(flavor=Flavor(vcpus=vcpus, memory_mb=memory, extra_specs=extra_specs))
    host = Host("host1", numa_cells=tuple(cells), pci_pools=tuple(pci_pools))
    verdict = numa.check(host, request, Profile(pci_alias=pci_alias))
    assert isinstance(verdict, numa.Misfit), verdict
    return verdict


def test_isolate_says_how_many_whole_cores_each_cell_has():
    # 2 threads a core; cell 0 has 3 wholly free cores (one thread of a fourth is pinned), cell 1 has 2.
    misfit = _why([_cell(0, range(8), pinned={7}, threads=2), _cell(1, range(8, 16), pinned={12, 14}, threads=2)],
                  {"hw:cpu_policy": "dedicated", "hw:cpu_thread_policy": "isolate", "hw:numa_nodes": "2"})
    assert misfit.reason == numa.NUMA_THREAD_POLICY
    assert misfit.explanation.startswith("guest cell 0 needs 4 dedicated CPUs (thread policy isolate), 1024 MB;")
    assert "host cell 0 has 3 wholly free cores for 4" in misfit.explanation
    assert "host cell 1 has 2 wholly free cores for 4" in misfit.explanation


def test_pages_say_what_each_cell_has_free():
    pages = (MemPages(4, 1048576), MemPages(2048, 512, used=500))
    misfit = _why([_cell(0, range(4), mempages=pages)], {"hw:mem_page_size": "2048"}, vcpus=2, memory=1024)
    assert misfit.reason == numa.NUMA_PAGES
    assert "needs 2 shared vCPUs, 1024 MB in 2048 KiB pages" in misfit.explanation
    assert "12 free 2048 KiB pages (24 MB)" in misfit.explanation


def test_too_few_cells_and_no_topology():
    assert _why([_cell(0, range(8))], {"hw:numa_nodes": "2"}).explanation == \
        "the guest needs 2 NUMA cells; the host has 1"
    assert _why([], {"hw:numa_nodes": "2"}).reason == numa.NUMA_NO_HOST_TOPOLOGY


def test_shared_cpus_over_the_allocation_ratio():
    misfit = _why([_cell(0, range(4), cpu_usage=15)], {"hw:numa_nodes": "1"}, vcpus=2, memory=1024)
    assert misfit.reason == numa.NUMA_CPUS
    assert "host cell 0 has 15 of 16 shared vCPUs in use (4 CPUs x 4)" in misfit.explanation


def test_require_without_smt_and_pci_far_from_the_cells():
    misfit = _why([_cell(0, range(8))], {"hw:cpu_policy": "dedicated", "hw:cpu_thread_policy": "require"})
    assert misfit.reason == numa.NUMA_THREAD_POLICY
    assert "none of the host's 1 cells has SMT siblings" in misfit.explanation
    gpu = '{"name": "gpu", "vendor_id": "10de", "product_id": "1eb8", "numa_policy": "required"}'
    misfit = _why([_cell(0, range(8)), _cell(1, range(8, 16), memory=1024)], {"hw:cpu_policy": "dedicated",
                  "pci_passthrough:alias": "gpu:1"}, pci_pools=[PciPool("10de", "1eb8", numa_node=1, count=1)],
                  pci_alias=(gpu,))
    assert misfit.reason == numa.NUMA_PCI_AFFINITY
    assert misfit.explanation.startswith("the guest fits host cells [0]: alias gpu needs 1 device")
