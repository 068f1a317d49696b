"""The tables of Nova's own NUMA unit tests, against engine.numa.

tests/data/nova_numa_unit_tables.json holds every call Nova 34.0.0's unit tests for these
functions make (nova/tests/unit/virt/test_hardware.py: NUMATopologyTest, VirtNUMAHostTopologyTestCase,
CPUPinningCellTestCase, CPUPinningTestCase, CPUSReservedCellTestCase, EmulatorThreadsTestCase,
HostCellsSortingTestCase, VirtMemoryPagesTestCase, CPURealtimeTestCase, ...;
nova/tests/unit/scheduler/filters/test_numa_topology_filters.py), with the answer the test
asserts, recorded by tests/capture_nova_numa_tables.py running those tests.
Entries of NovaSearchQuirks are not Nova's tests but cases labelled the same way, where the
search's mutation of the guest cells it tries changes Nova's answer; tests/data/nova_numa_random_scenarios.json
(RandomScenarios) holds seeded random hosts and flavors labelled so too: guest topology, fit, usage.
Each call is a test here, named after Nova's test (and the call's place in it):

- numa_get_constraints -> guest_topology: the same cells (vCPUs, pinned vCPUs, memory, page size,
  policies) or, where Nova raises, InvalidField naming Nova's exception;
- numa_fit_instance_to_host -> fit: the same host cell for each guest cell, the same pinning,
  reserved CPUs and page size, or a Misfit where Nova finds none;
- _numa_fit_instance_cell -> fit_cell, the same for one cell;
- NUMATopologyFilter.host_passes -> decide, the same verdict;
- numa_usage_from_instance_numa -> consume: the same host cells after (pinned CPUs, memory and
  page use, shared vCPU use);
- the helpers Nova's tests call directly (the page size, realtime mask and CPU policy constraints,
  the page size a cell can give) -> the engine.numa helper doing that step.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from placecheck_engine import numa
from placecheck_engine.config import Profile
from placecheck_engine.image_meta import image_meta_props
from placecheck_engine.model import Flavor, Host, Image, InvalidField, MemPages, NumaCell, PciPool, Request
from placecheck_engine.pci import PciRequest

DATA = Path(__file__).resolve().parent / "data"
TABLES = [record for name in ("nova_numa_unit_tables.json", "nova_numa_random_scenarios.json")
          for record in json.loads((DATA / name).read_text())]
NO_LIMITS = math.inf  # a ratio no usage reaches: Nova's fit without NUMATopologyLimits


def _ids(records):
    seen = Counter()
    ids = []
    for record in records:
        seen[record["test"]] += 1
        ids.append(f"{record['test']}[{seen[record['test']]}]")
    return ids


def _of_kind(kind, unless: str = ""):
    records = [record for record in TABLES if record["kind"] == kind and unless not in record]
    return pytest.mark.parametrize("record", records, ids=_ids(records))


def host_cell(cell: dict) -> NumaCell:
    return NumaCell(id=cell["id"], cpuset=frozenset(cell["cpuset"]), pcpuset=frozenset(cell["pcpuset"]),
                    memory=cell["memory"], cpu_usage=cell["cpu_usage"], memory_usage=cell["memory_usage"],
                    pinned_cpus=frozenset(cell["pinned_cpus"]),
                    siblings=tuple(frozenset(siblings) for siblings in cell["siblings"]),
                    mempages=tuple(MemPages(**pages) for pages in cell["mempages"]), socket=cell["socket"])


def guest_cell(cell: dict) -> numa.GuestCell:
    return numa.GuestCell(id=cell["id"], cpus=frozenset(cell["cpus"]), pcpus=frozenset(cell["pcpus"]),
                          memory=cell["memory"], pagesize=cell["pagesize"], cpu_policy=cell["cpu_policy"],
                          cpu_thread_policy=cell["cpu_thread_policy"])


def guest(topology: dict | None) -> numa.GuestTopology | None:
    if topology is None:
        return None
    return numa.GuestTopology(cells=tuple(map(guest_cell, topology["cells"])),
                              emulator_threads_policy=topology["emulator_threads_policy"])


def host(record: dict, cpu_ratio, ram_ratio) -> Host:
    return Host(name="host1", numa_cells=tuple(map(host_cell, record["host_cells"])),
                pci_pools=tuple(PciPool(**pool) for pool in record.get("pci_pools") or ()),
                cpu_allocation_ratio=cpu_ratio, ram_allocation_ratio=ram_ratio)


def pci_requests(record: dict) -> tuple[PciRequest, ...]:
    return tuple(PciRequest(count=r["count"], specs=tuple(r["specs"]), alias_name=r["alias_name"],
                            numa_policy=r["numa_policy"], requester=f"request {index}")
                 for index, r in enumerate(record["pci_requests"]))


def profile(record: dict) -> Profile:
    return Profile(packing_host_numa_cells_allocation_strategy=record["packing"])


def placed(placement: numa.CellPlacement) -> dict:
    """A Fit's cell in the terms the record keeps."""
    return {"id": placement.host_cell, "pinning": sorted(map(list, placement.pinning)),
            "cpuset_reserved": sorted(placement.cpuset_reserved), "pagesize": placement.pagesize}


def nova_placed(cell: dict) -> dict:
    return {**cell, "pinning": sorted(map(list, cell["pinning"]))}


@_of_kind("constraints")
def test_numa_get_constraints(record):
    flavor = record["flavor"]
    request = Request(flavor=Flavor(name=flavor["name"], extra_specs=flavor["extra_specs"], vcpus=flavor["vcpus"],
                                    memory_mb=flavor["memory_mb"]),
                      image=Image(properties=record["image_properties"]))
    if "raises" in record:
        with pytest.raises(InvalidField) as refusal:
            numa.guest_topology(request, Profile())
        assert f"Nova's {record['raises']}" in refusal.value.description
        return
    assert numa.guest_topology(request, Profile()) == guest(record["result"])


@_of_kind("fit")
def test_numa_fit_instance_to_host(record):
    limits = record["limits"] or (NO_LIMITS, NO_LIMITS)
    answer = numa.fit(host(record, *limits), guest(record["guest"]), pci_requests(record), profile(record))
    if record["result"] is None:
        assert isinstance(answer, numa.Misfit), answer
    else:
        assert isinstance(answer, numa.Fit), answer
        assert [placed(cell) for cell in answer.cells] == [nova_placed(cell) for cell in record["result"]]


@_of_kind("fit_cell")
def test_numa_fit_instance_cell(record):
    answer = numa.fit_cell(host_cell(record["host_cell"]), guest_cell(record["guest_cell"]),
                           tuple(record["limits"]) if record["limits"] else None, record["reserved"])
    if record.get("result") is None:  # no fit, or Nova's MemoryPageSizeNotSupported
        assert isinstance(answer, numa.Misfit), answer
    else:
        assert placed(answer) == nova_placed(record["result"])


@_of_kind("filter")
def test_numa_topology_filter(record):
    request = Request(flavor=Flavor(extra_specs=record["extra_specs"]),
                      image=Image(properties=record["image_properties"]))
    answer = numa.decide(host(record, record["cpu_allocation_ratio"], record["ram_allocation_ratio"]), request,
                         guest(record["guest"]), pci_requests(record), profile(record))
    assert (not isinstance(answer, numa.Misfit)) == record["result"], answer


# Where Nova raises (pinning CPUs already pinned), it was handed a fitted topology that overlaps
# the host's pinned CPUs: a Fit never does, so there is nothing of consume's to compare.
@_of_kind("usage", unless="raises")
def test_numa_usage_from_instance_numa(record):
    fitted = numa.Fit(cells=tuple(
        numa.CellPlacement(guest_cell=index, host_cell=cell["id"], pinning=tuple(map(tuple, cell["pinning"])),
                           cpuset_reserved=frozenset(cell["cpuset_reserved"]), pagesize=cell["pagesize"],
                           shared_cpus=len(cell["cpus"]), memory=cell["memory"], cpu_policy=cell["cpu_policy"],
                           cpu_thread_policy=cell["cpu_thread_policy"])
        for index, cell in enumerate(record["placed"])))
    after = numa.consume(host(record, None, None), fitted)
    assert after.numa_cells == tuple(map(host_cell, record["result"]))


def _typed(record: dict) -> tuple[dict, dict, int]:
    return record["flavor"]["extra_specs"], image_meta_props(record["image_properties"]), record["flavor"]["vcpus"]


def _same_answer(record: dict, answer) -> None:
    """Nova's value, or InvalidField naming the exception Nova raised."""
    if "raises" in record:
        with pytest.raises(InvalidField) as refusal:
            answer()
        assert f"Nova's {record['raises']}" in refusal.value.description
    else:
        value = answer()
        assert (sorted(value) if isinstance(value, set) else value) == record["result"]


@_of_kind("_get_numa_pagesize_constraint")
def test_get_numa_pagesize_constraint(record):
    extra_specs, image, _vcpus = _typed(record)
    _same_answer(record, lambda: numa._page_size_constraint(extra_specs, image))


@_of_kind("get_realtime_cpu_constraint")
def test_get_realtime_cpu_constraint(record):
    extra_specs, image, vcpus = _typed(record)
    _same_answer(record, lambda: numa._realtime_cpus(extra_specs, image, vcpus))


@_of_kind("get_cpu_policy_constraint")
def test_get_cpu_policy_constraint(record):
    extra_specs, image, _vcpus = _typed(record)
    _same_answer(record, lambda: numa._cpu_policy(extra_specs, image))


@_of_kind("_numa_cell_supports_pagesize_request")
def test_numa_cell_supports_pagesize_request(record):
    # Nova's MemoryPageSizeNotSupported (a size the cell lacks) is no page size, as the fit takes it.
    expected = None if "raises" in record else record["result"]
    assert numa.page_size_for(host_cell(record["host_cell"]), record["memory"], record["pagesize"]) == expected


@_of_kind("get_locked_memory_constraint")
def test_get_locked_memory_constraint(record):
    extra_specs, image, _vcpus = _typed(record)
    _same_answer(record, lambda: numa._locked_memory(extra_specs, image))
