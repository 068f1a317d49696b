"""NUMA cells and PCI pools through the state path: the proto contract and the fleet file both
ways, the columns (host_at, numa_cells_at, pci_pools_at), usage updates that replace them, the
store across a restart, and bad values refused naming the field."""
from __future__ import annotations

import dataclasses
import json
import math
import uuid
from contextlib import closing

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetgen import fleets, numa_cells, pci_pools
from placecheck import PlacementClient, StateClient, bad_request_violations
from placecheck.v1 import fleet_pb2, placement_pb2, state_pb2
from placecheck_engine import column_schema
from placecheck_engine.columns import build_columns, host_at
from placecheck_engine.columns_splice import splice
from placecheck_engine.fleetfile import fleet_from_json, fleet_to_json, request_from_json, request_to_json
from placecheck_engine.model import (Fleet, Flavor, Host, InvalidField, Inventory, MemPages, NumaCell, PciPool, Port,
                                     Request)
from placecheck_engine.snapshot import SnapshotWriter
from placecheck_engine.state import FleetState, HostUsage, recovered_columns
from placecheck_engine.store import FleetStore
from placecheck_server import convert
from sidecar import start_sidecar

TIMEOUT_S = 10.0

CELLS = (
    NumaCell(0, cpuset=frozenset({0, 1, 2, 3}), pcpuset=frozenset({4, 5, 6, 7}), memory=8192, cpu_usage=3,
             memory_usage=2048, pinned_cpus=frozenset({4}),
             siblings=(frozenset({0, 1}), frozenset({2, 3}), frozenset({4, 5}), frozenset({6, 7})),
             mempages=(MemPages(4, 1572864, 524288), MemPages(2048, 512, 0, 64)), socket=0),
    NumaCell(1, cpuset=frozenset({8, 9}), pcpuset=frozenset({8, 9}), memory=4096),
)
POOLS = (PciPool("8086", "154d", "type-VF", numa_node=1, count=4,
                 tags={"physical_network": "physnet1", "trusted": "true"}),
         PciPool("10de", "1eb8", count=2))
NUMA_HOST = Host("numa-1", resources={"VCPU": Inventory(16, allocation_ratio=4.0), "MEMORY_MB": Inventory(12288)},
                 numa_cells=CELLS, pci_pools=POOLS, cpu_allocation_ratio=16.0)
# The usage after a guest pinned CPUs 5 and 6 on cell 0, took two 2 MiB pages and one VF.
TAKEN_CELLS = (dataclasses.replace(CELLS[0], pinned_cpus=frozenset({4, 5, 6}), memory_usage=3072,
                                   mempages=(MemPages(4, 1572864, 524288), MemPages(2048, 512, 2, 64))), CELLS[1])
TAKEN_POOLS = (dataclasses.replace(POOLS[0], count=3), POOLS[1])


# ---------------------------------------------------------------- the columns

def test_the_columns_summarise_cells_and_pools_and_give_them_back():
    plain = Host("plain", resources={"VCPU": Inventory(8, allocation_ratio=2.0)})
    columns = build_columns(Fleet((NUMA_HOST, plain)))
    arrays = columns.arrays
    assert arrays["numa_cell_count"].tolist() == [2, 0]
    assert arrays["numa_free_pcpus"].tolist() == [3 + 2, 0]  # cell 0: 4 pinned of 4..7; cell 1: 8, 9
    assert arrays["numa_max_free_pcpus"].tolist() == [3, 0]
    assert arrays["numa_max_cpus"].tolist() == [4, 0]
    assert arrays["numa_cpu_ratio"].tolist() == [16.0, 2.0]  # the host's own, else its VCPU inventory's
    assert arrays["numa_ram_ratio"][0] == 1.0 and math.isnan(arrays["numa_ram_ratio"][1])
    assert arrays["pci_free_devices"].tolist() == [6, 0]
    assert arrays["pci_pool_offsets"].tolist() == [0, 2, 2]
    assert arrays["pci_pool_numa_node"].tolist() == [1, -1]
    assert arrays["pci_pool_count"].tolist() == [4, 2]
    assert [columns.dicts["pci_pool_kinds"][kind] for kind in arrays["pci_pool_kind"].tolist()] == [
        ["8086", "154d", "type-VF", {"physical_network": "physnet1", "trusted": "true"}], ["10de", "1eb8", "type-PCI", {}]]
    assert columns.numa_cells_at(0) == CELLS and columns.numa_cells_at(1) == ()
    assert columns.pci_pools_at(0) == POOLS
    assert host_at(columns, 0) == NUMA_HOST and host_at(columns, 1) == plain
    # A ratio the host gives that equals its inventory's is still its own.
    same = dataclasses.replace(plain, cpu_allocation_ratio=2.0)
    assert host_at(build_columns(Fleet((same,))), 0) == same


def test_pools_of_one_kind_share_it_whatever_the_order_of_their_tags():
    hosts = (Host("a", pci_pools=(PciPool("8086", "154d", tags={"a": "1", "b": "2"}),)),
             Host("b", pci_pools=(PciPool("8086", "154d", tags={"b": "2", "a": "1"}), PciPool("8086", "154e"))))
    columns = build_columns(Fleet(hosts))
    assert columns.arrays["pci_pool_kind"].tolist() == [0, 0, 1]
    assert [host_at(columns, row) for row in range(2)] == list(hosts)


@st.composite
def odd_sibling_cells(draw) -> tuple[NumaCell, ...]:
    """Cells whose sibling sets overlap, hold CPUs the cell has not or more than 8 threads (nothing
    bounds them), some holding 8 free CPUs or more: numa_cell_sets_with_free must count every set
    however it is made."""
    cells = []
    for cell in draw(numa_cells()):
        pcpuset = frozenset(draw(st.lists(st.integers(0, 40), max_size=14)))
        pinned = frozenset(draw(st.lists(st.sampled_from(sorted(pcpuset)), max_size=4))) if pcpuset else frozenset()
        siblings = draw(st.lists(st.frozensets(st.integers(0, 40), max_size=12), max_size=5))
        if draw(st.booleans()):
            siblings.append(pcpuset | draw(st.frozensets(st.integers(0, 40), max_size=3)))
        cells.append(dataclasses.replace(cell, pcpuset=pcpuset, pinned_cpus=pinned,
                                         siblings=tuple(draw(st.permutations(siblings)))))
    return tuple(cells)


def expected_cell_arrays(hosts) -> dict[str, list]:
    """The cell and page entries, computed plainly from each host's cells."""
    cells = [cell for host in hosts for cell in host.numa_cells]
    frees = [cell.pcpuset - cell.pinned_cpus for cell in cells]
    pages = [pages for cell in cells for pages in cell.mempages]

    def firsts(counts):
        return [sum(counts[:index]) for index in range(len(counts) + 1)]

    return {
        "numa_cell_first": firsts([len(host.numa_cells) for host in hosts]),
        "numa_cell_id": [cell.id for cell in cells],
        "numa_cell_socket": [-1 if cell.socket is None else cell.socket for cell in cells],
        "numa_cell_memory": [cell.memory for cell in cells],
        "numa_cell_memory_usage": [cell.memory_usage for cell in cells],
        "numa_cell_cpu_usage": [cell.cpu_usage for cell in cells],
        "numa_cell_cpus": [len(cell.cpuset) for cell in cells],
        "numa_cell_pcpus": [len(cell.pcpuset) for cell in cells],
        "numa_cell_free_pcpus": [len(free) for free in frees],
        "numa_cell_same_sets": [int(cell.cpuset == cell.pcpuset) for cell in cells],
        "numa_cell_threads_per_core": [max((len(threads) for threads in cell.siblings), default=0) for cell in cells],
        "numa_cell_free_in_sets": [len(set().union(*(threads & free for threads in cell.siblings)))
                                   for cell, free in zip(cells, frees)],
        "numa_cell_sets_with_free": [[sum(len(threads & free) >= at_least for threads in cell.siblings)
                                      for at_least in range(1, 9)] for cell, free in zip(cells, frees)],
        "numa_cell_page_first": firsts([len(cell.mempages) for cell in cells]),
        "numa_page_size_kb": [pages.size_kb for pages in pages],
        "numa_page_total": [pages.total for pages in pages],
        "numa_page_free": [pages.total - pages.used - pages.reserved for pages in pages],
    }


def test_the_cell_entries_of_a_known_host():
    columns = build_columns(Fleet((NUMA_HOST, Host("plain"), dataclasses.replace(NUMA_HOST, name="numa-2"))))
    arrays = {name: columns.arrays[name].tolist() for name in expected_cell_arrays(()).keys()}
    assert arrays["numa_cell_first"] == [0, 2, 2, 4]
    assert arrays["numa_cell_free_pcpus"] == [3, 2] * 2  # cell 0: 4 pinned of 4..7
    assert arrays["numa_cell_same_sets"] == [0, 1] * 2
    assert arrays["numa_cell_threads_per_core"] == [2, 0] * 2
    assert arrays["numa_cell_free_in_sets"] == [3, 0] * 2
    assert arrays["numa_cell_sets_with_free"][:2] == [[2, 1, 0, 0, 0, 0, 0, 0], [0] * 8]  # {4, 5} has 5, {6, 7} both
    assert arrays["numa_cell_page_first"] == [0, 2, 2, 4, 4]
    assert arrays["numa_page_free"] == [1572864 - 524288, 512 - 64] * 2


@settings(max_examples=150, deadline=None)
@given(fleets(max_hosts=8), st.data())
def test_the_cell_entries_are_each_hosts_cells_in_row_order(fleet, data):
    hosts = [dataclasses.replace(host, numa_cells=data.draw(odd_sibling_cells())) if data.draw(st.booleans()) else host
             for host in fleet.hosts]
    columns = build_columns(Fleet(tuple(hosts), fleet.aggregates))
    column_schema.check(dict(columns.arrays))
    for name, values in expected_cell_arrays(hosts).items():
        assert columns.arrays[name].tolist() == values, name


@settings(max_examples=60, deadline=None)
@given(fleets(max_hosts=6), st.data())
def test_splicing_cells_and_pools_in_and_out_is_a_full_build(fleet, data):
    """Hosts' cells and pools replaced, dropped and added: splice gives build_columns' arrays and dicts."""
    names = [host.name for host in fleet.hosts]
    upserted = [dataclasses.replace(host, numa_cells=data.draw(st.just(()) | numa_cells() | odd_sibling_cells()),
                                    pci_pools=data.draw(st.just(()) | pci_pools()))
                for host in data.draw(st.lists(st.sampled_from(fleet.hosts), max_size=3, unique_by=lambda h: h.name))]
    upserted.append(Host("appended-" + str(len(names)), numa_cells=data.draw(numa_cells() | odd_sibling_cells()),
                         pci_pools=data.draw(pci_pools())))
    removed = set(data.draw(st.lists(st.sampled_from(names), max_size=2)))
    spliced = splice(build_columns(fleet), upserted, removed, list(fleet.aggregates), members_changed=())
    by_name = {host.name: host for host in fleet.hosts if host.name not in removed}
    by_name.update((host.name, host) for host in upserted)
    expected = build_columns(Fleet(tuple(by_name.values()), fleet.aggregates))
    assert dict.keys(spliced.arrays) == dict.keys(expected.arrays)
    for name in dict.keys(expected.arrays):
        got, want = dict.__getitem__(spliced.arrays, name), dict.__getitem__(expected.arrays, name)
        assert (got.dtype, got.shape, got.tobytes()) == (want.dtype, want.shape, want.tobytes()), name
    assert spliced.dicts == expected.dicts
    assert [host_at(spliced, row) for row in range(spliced.host_count)] == list(by_name.values())


# ---------------------------------------------------------------- the contract and the fleet file

@settings(max_examples=60, deadline=None)
@given(fleets(max_hosts=6))
def test_hosts_round_trip_through_the_proto_and_the_fleet_file(fleet):
    for index, host in enumerate(fleet.hosts):
        message = fleet_pb2.Host.FromString(convert.host_to_proto(host).SerializeToString())
        assert convert.host_from_proto(message, f"hosts[{index}]") == host
    # A file admits no min_unit above max_unit nor an unknown aggregate member: hosts without inventories.
    file_fleet = Fleet(tuple(dataclasses.replace(host, resources={}) for host in fleet.hosts))
    assert fleet_from_json(json.loads(json.dumps(fleet_to_json(file_fleet)))) == file_fleet


def test_requests_carry_the_flavor_size_and_the_ports_both_ways():
    request = Request(resources={"VCPU": 4}, flavor=Flavor("f", {"hw:cpu_policy": "dedicated"}, vcpus=4,
                                                           memory_mb=2048),
                      ports=(Port("direct", "physnet1", True, "required"), Port("normal"), Port("macvtap", trusted=False)))
    message = placement_pb2.PlacementRequest.FromString(convert.request_to_proto(request).SerializeToString())
    assert convert.request_from_proto(message) == request
    assert request_from_json(request_to_json(request)) == request
    assert request_from_json({"flavor": {"vcpus": 2}, "ports": [{"vnic_type": "direct"}]}) == Request(
        flavor=Flavor(vcpus=2), ports=(Port("direct"),))


def cell_json(**fields) -> dict:
    return {"id": 0, "cpuset": [0, 1], "pcpuset": [2, 3], "memory": 1024, **fields}


BAD_HOSTS = [  # (the host's extra fleet-file fields, the field named, words of the description)
    ({"numa_cells": [cell_json(pinned_cpus=[1])]}, "hosts[0].numa_cells[0].pinned_cpus", "CPU 1 is not in"),
    ({"numa_cells": [cell_json(), cell_json()]}, "hosts[0].numa_cells[1].id", "duplicate NUMA cell id"),
    ({"numa_cells": [cell_json(mempages=[{"size_kb": 0, "total": 4}])]}, "hosts[0].numa_cells[0].mempages[0].size_kb",
     "from 1"),
    ({"numa_cells": [cell_json(mempages=[{"size_kb": 4, "total": 4}, {"size_kb": 4, "total": 8}])]},
     "hosts[0].numa_cells[0].mempages[1].size_kb", "duplicate page size"),
    ({"numa_cells": [cell_json(cpuset=[-1])]}, "hosts[0].numa_cells[0].cpuset[0]", "non-negative"),
    ({"numa_cells": [cell_json(memory_usage=-5)]}, "hosts[0].numa_cells[0].memory_usage", "non-negative"),
    ({"numa_cells": [cell_json(socket=2**31)]}, "hosts[0].numa_cells[0].socket", "from 0 to 2147483647"),
    ({"numa_cells": [{"cpuset": [0]}]}, "hosts[0].numa_cells[0].id", "required"),
    ({"numa_cells": [cell_json(cpu_set=[0])]}, "hosts[0].numa_cells[0].cpu_set", "unknown field"),
    ({"pci_pools": [{"vendor_id": "8086", "product_id": "154d", "count": -1}]}, "hosts[0].pci_pools[0].count",
     "non-negative"),
    ({"pci_pools": [{"vendor_id": "", "product_id": "154d"}]}, "hosts[0].pci_pools[0].vendor_id", "must not be empty"),
    ({"pci_pools": [{"vendor_id": "8086", "product_id": "154d", "dev_type": "type-XX"}]},
     "hosts[0].pci_pools[0].dev_type", "type-VF"),
    ({"pci_pools": [{"vendor_id": "8086", "product_id": "154d", "numa_node": -1}]}, "hosts[0].pci_pools[0].numa_node",
     "non-negative"),
    ({"cpu_allocation_ratio": 0}, "hosts[0].cpu_allocation_ratio", "> 0"),
    ({"ram_allocation_ratio": 1e39}, "hosts[0].ram_allocation_ratio", "> 0"),
]


@pytest.mark.parametrize("extra, field, words", BAD_HOSTS)
def test_the_fleet_file_refuses_bad_cells_pools_and_ratios_naming_the_field(extra, field, words):
    with pytest.raises(InvalidField) as raised:
        fleet_from_json({"hosts": [{"name": "h", **extra}]})
    assert raised.value.field == field and words in raised.value.description


def proto_host(**fields) -> fleet_pb2.Host:
    return fleet_pb2.Host(name="h", **fields)


BAD_PROTO_HOSTS = [
    (proto_host(numa_cells=[fleet_pb2.NumaCell(id=0, pcpuset=[2], pinned_cpus=[3])]), "numa_cells[0].pinned_cpus"),
    (proto_host(numa_cells=[fleet_pb2.NumaCell(id=1), fleet_pb2.NumaCell(id=1)]), "numa_cells[1].id"),
    (proto_host(numa_cells=[fleet_pb2.NumaCell(id=-1)]), "numa_cells[0].id"),
    (proto_host(numa_cells=[fleet_pb2.NumaCell(id=0, cpuset=[4, -2])]), "numa_cells[0].cpuset"),
    (proto_host(numa_cells=[fleet_pb2.NumaCell(id=0, siblings=[fleet_pb2.CpuSiblings(cpus=[-1])])]),
     "numa_cells[0].siblings[0]"),
    (proto_host(numa_cells=[fleet_pb2.NumaCell(id=0, mempages=[fleet_pb2.MemPages(size_kb=0)])]),
     "numa_cells[0].mempages[0].size_kb"),
    (proto_host(numa_cells=[fleet_pb2.NumaCell(id=0, mempages=[fleet_pb2.MemPages(size_kb=4, used=-1)])]),
     "numa_cells[0].mempages[0].used"),
    (proto_host(numa_cells=[fleet_pb2.NumaCell(id=0, memory=2**60)]), "numa_cells[0].memory"),
    (proto_host(pci_pools=[fleet_pb2.PciPool(vendor_id="8086", product_id="")]), "pci_pools[0].product_id"),
    (proto_host(pci_pools=[fleet_pb2.PciPool(vendor_id="8086", product_id="1", count=2**31)]), "pci_pools[0].count"),
    (proto_host(cpu_allocation_ratio=math.nan), "cpu_allocation_ratio"),
    (proto_host(ram_allocation_ratio=-1.0), "ram_allocation_ratio"),
]


@pytest.mark.parametrize("message, field", BAD_PROTO_HOSTS)
def test_the_contract_refuses_bad_cells_pools_and_ratios_naming_the_field(message, field):
    with pytest.raises(InvalidField) as raised:
        convert.hosts_from_proto([message], "hosts")
    assert raised.value.field == f"hosts[0].{field}"


def test_usage_updates_are_refused_naming_the_field():
    bad_cells = state_pb2.HostUsage(name="h", numa_cells=state_pb2.NumaCellList(
        cells=[fleet_pb2.NumaCell(id=0, pinned_cpus=[1])]))
    bad_pools = state_pb2.HostUsage(name="h", pci_pools=state_pb2.PciPoolList(
        pools=[fleet_pb2.PciPool(vendor_id="8086", product_id="1", numa_node=-3)]))
    for message, field in ((bad_cells, "usages[0].numa_cells.cells[0].pinned_cpus"),
                           (bad_pools, "usages[0].pci_pools.pools[0].numa_node")):
        with pytest.raises(InvalidField) as raised:
            convert.host_usage_from_proto(message, "usages[0]")
        assert raised.value.field == field
    # Unset leaves them alone, an empty list clears them.
    assert convert.host_usage_from_proto(state_pb2.HostUsage(name="h"), "u").numa_cells is None
    emptied = convert.host_usage_from_proto(state_pb2.HostUsage(name="h", numa_cells=state_pb2.NumaCellList(),
                                                                pci_pools=state_pb2.PciPoolList()), "u")
    assert (emptied.numa_cells, emptied.pci_pools) == ((), ())


# ---------------------------------------------------------------- the state owner and its store

@pytest.fixture
def prefix():
    return f"pc-numa-{uuid.uuid4().hex[:8]}"


def test_a_usage_update_replaces_cells_and_pools_and_a_restart_keeps_them(prefix, tmp_path):
    other = Host("other", resources={"VCPU": Inventory(8)})
    with SnapshotWriter(prefix) as writer, closing(FleetStore(str(tmp_path))) as store:
        state = FleetState(writer, store)
        state.replace(Fleet((NUMA_HOST, other)))
        state.update_usage([HostUsage("numa-1", used={"VCPU": 3}, numa_cells=TAKEN_CELLS, pci_pools=TAKEN_POOLS),
                            HostUsage("other", num_instances=2)])
        expected = dataclasses.replace(NUMA_HOST, numa_cells=TAKEN_CELLS, pci_pools=TAKEN_POOLS,
                                       resources={**NUMA_HOST.resources, "VCPU": Inventory(16, allocation_ratio=4.0, used=3)})
        published = writer.current.columns
        assert host_at(published, 0) == expected
        assert published.arrays["numa_free_pcpus"][0] == 3 and published.arrays["pci_free_devices"][0] == 5
        # A later plain usage update (a delta) keeps them; None leaves them, () clears the pools.
        state.update_usage([HostUsage("numa-1", used={"VCPU": 4})])
        state.update_usage([HostUsage("numa-1", pci_pools=())])
        expected = dataclasses.replace(expected, pci_pools=(),
                                       resources={**NUMA_HOST.resources, "VCPU": Inventory(16, allocation_ratio=4.0, used=4)})
        assert state.fleet().hosts[0] == expected
        with pytest.raises(InvalidField, match=r"usages\[0\]\.numa_cells\[0\]\.pinned_cpus"):
            state.update_usage([HostUsage("numa-1", numa_cells=(NumaCell(0, pinned_cpus=frozenset({1})),))])
        acknowledged = state.fleet()
    with closing(FleetStore(str(tmp_path))) as store:
        recovered = recovered_columns(store.recovered)
        assert [host_at(recovered, row) for row in range(recovered.host_count)] == list(acknowledged.hosts)


# ---------------------------------------------------------------- over real gRPC

def test_cells_and_pools_over_grpc_reach_the_rules_and_survive_a_restart(tmp_path):
    """UpsertHosts then UpdateUsage with cells and pools: CheckDestination answers from them (three
    dedicated CPUs fit in cell 0 until the update pins two more), before and after a restart."""
    state_dir = tmp_path / "state"
    host = convert.host_to_proto(NUMA_HOST)
    usage = state_pb2.HostUsage(name="numa-1", numa_cells=state_pb2.NumaCellList(
        cells=[convert.numa_cell_to_proto(cell) for cell in TAKEN_CELLS]),
        pci_pools=state_pb2.PciPoolList(pools=[convert.pci_pool_to_proto(pool) for pool in TAKEN_POOLS]))
    pinned = placement_pb2.PlacementRequest(
        flavor=placement_pb2.Flavor(name="pinned", extra_specs={"hw:cpu_policy": "dedicated"}, vcpus=3,
                                    memory_mb=1024), ports=[placement_pb2.Port(vnic_type="normal")])

    def refusing_rules(placement, generation=0) -> list[str]:
        verdict, = placement.check_destination(pinned, ["numa-1"], min_generation=generation,
                                               timeout=TIMEOUT_S).verdicts
        return [rejection.rule for rejection in verdict.rejections]

    with start_sidecar(workers=1, metrics=False, state_dir=state_dir, wait_serving=False) as sidecar, \
            StateClient(sidecar.state_target) as state, PlacementClient(sidecar.decision_target) as placement:
        assert refusing_rules(placement, state.upsert_hosts([host], timeout=TIMEOUT_S)) == []
        with pytest.raises(grpc.RpcError) as refused:
            state.upsert_hosts([fleet_pb2.Host(name="bad", numa_cells=[fleet_pb2.NumaCell(id=0, pinned_cpus=[7])])],
                               timeout=TIMEOUT_S)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [field for field, _ in bad_request_violations(refused.value)] == ["hosts[0].numa_cells[0].pinned_cpus"]
        assert refusing_rules(placement, state.update_usage([usage], timeout=TIMEOUT_S)) == ["NUMATopologyFilter"]
    with closing(FleetStore(str(state_dir))) as store:
        recovered = recovered_columns(store.recovered)
        assert host_at(recovered, recovered.row_of("numa-1")) == dataclasses.replace(
            NUMA_HOST, numa_cells=TAKEN_CELLS, pci_pools=TAKEN_POOLS)
    with start_sidecar(workers=1, metrics=False, state_dir=state_dir) as restarted, \
            PlacementClient(restarted.decision_target) as placement:
        assert refusing_rules(placement) == ["NUMATopologyFilter"]
