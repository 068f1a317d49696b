"""The dictionary encodings of engine/columns.py against the fleet they encode."""
from __future__ import annotations

import dataclasses
import ipaddress
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from placecheck_engine import _fastfilters, column_schema
from placecheck_engine.columns import FLAG_HOST_IPV4, aggregate_metadata_get_by_host, build_columns
from placecheck_engine.model import Aggregate, Fleet, Host
from fleetgen import INSTANCE_UUIDS, fleets
from test_rules_kernel import as_snapshot


@settings(max_examples=80, deadline=None)
@given(fleets(max_hosts=16))
def test_encodings_decode_to_each_host(fleet):
    columns = as_snapshot(build_columns(fleet))
    arrays, dicts = columns.arrays, columns.dicts
    metric_names = dicts["metric_names"]
    assert metric_names == sorted({name for host in fleet.hosts for name in host.metrics})
    for table in ("aggregate_sets", "host_profiles", "host_ips", "metric_sets"):
        assert len({repr(value) for value in dicts[table]}) == len(dicts[table]), f"{table} not distinct"
    for row, host in enumerate(fleet.hosts):
        aggregates = fleet.aggregates_of(host.name)
        set_id = arrays["aggregate_set_id"][row]
        assert {dicts["aggregates"][bit] for bit in dicts["aggregate_sets"][set_id]} == {a.id for a in aggregates}
        assert columns.aggregate_metadata_by_set(set_id) == aggregate_metadata_get_by_host(
            a.metadata for a in aggregates)

        profile = dicts["host_profiles"][arrays["host_profile_id"][row]]
        assert profile == {"hypervisor_type": host.hypervisor_type,
                           "hypervisor_version": host.hypervisor_version,
                           "supported_instances": [list(entry) for entry in host.supported_instances],
                           "stats": host.stats}
        assert arrays["hypervisor_version"][row] == (host.hypervisor_version or 0)
        assert arrays["failed_builds"][row] == host.failed_builds

        assert dicts["host_ips"][arrays["host_ip_id"][row]] == host.host_ip
        try:
            address = ipaddress.ip_address(host.host_ip)
        except ValueError:
            address = None
        is_ipv4 = isinstance(address, ipaddress.IPv4Address)
        assert bool(arrays["flags"][row] & FLAG_HOST_IPV4) == is_ipv4
        assert arrays["host_ipv4"][row] == (int(address) if is_ipv4 else 0)

        assert dicts["metric_sets"][arrays["metric_set_id"][row]] == sorted(host.metrics)
        for index, name in enumerate(metric_names):
            value = arrays["metric_values"][index, row]
            assert value == host.metrics[name] if name in host.metrics else math.isnan(value)
    assert dicts["host_ips"] == sorted(dicts["host_ips"])


def test_aggregate_metadata_is_novas_union_of_comma_lists():
    fleet = Fleet((Host("a"), Host("b"), Host("c")), (
        Aggregate(1, hosts=frozenset({"a", "b"}), metadata={"k": "1, 2", "empty": ""}),
        Aggregate(2, hosts=frozenset({"b"}), metadata={"k": " 3 ,1"})))
    columns = build_columns(fleet)
    by_row = [columns.aggregate_metadata_by_set(set_id) for set_id in columns.arrays["aggregate_set_id"]]
    assert by_row == [{"k": {"1", "2"}, "empty": {""}}, {"k": {"1", "2", "3"}, "empty": {""}}, {}]
    assert len(columns.dicts["aggregate_sets"]) == 3


def test_ipv4_is_only_the_dotted_quad():
    hosts = tuple(Host(f"h{i}", host_ip=ip) for i, ip in enumerate(("10.0.0.1", "010.0.0.1", "1", "::1", "")))
    columns = build_columns(Fleet(hosts))
    assert (columns.arrays["flags"] & FLAG_HOST_IPV4 != 0).tolist() == [True, False, False, False, False]
    assert columns.arrays["host_ipv4"][0] == 0x0A000001


def _near_misses(instance: str) -> list[str]:
    """Ids that name the same uuid to uuid.UUID but are other strings, so match no host."""
    return [instance.upper(), "{" + instance + "}", instance.replace("-", ""), instance + " ", instance[:-1]]


# Canonical uuids, the fleetgen ids (uuids and odd ones), uuid-like ids that are not canonical,
# and arbitrary text: the two indexes, their hash collisions and the boundary between them.
instance_ids = st.one_of(st.uuids().map(str), st.sampled_from(INSTANCE_UUIDS),
                         st.uuids().map(lambda u: str(u).upper()), st.uuids().map(lambda u: u.hex),
                         st.text(max_size=40))


@settings(max_examples=150, deadline=None)
@given(fleets(max_hosts=16), st.data())
def test_instance_lookups_match_the_model(fleet, data):
    pool = data.draw(st.lists(instance_ids, min_size=1, max_size=12, unique=True))
    fleet = dataclasses.replace(fleet, hosts=tuple(
        dataclasses.replace(host, instances=tuple(data.draw(st.lists(st.sampled_from(pool), max_size=6))))
        for host in fleet.hosts))
    columns = as_snapshot(build_columns(fleet))
    present = sorted({instance for host in fleet.hosts for instance in host.instances})
    absent = data.draw(st.lists(instance_ids, max_size=4)) + [m for i in present[:2] for m in _near_misses(i)]
    queries = data.draw(st.lists(st.sampled_from(present + absent), max_size=12)) if present else absent
    for uuids in (queries, queries[:1], [], present, absent):
        rows_per_uuid = [[row for row, host in enumerate(fleet.hosts) if instance in host.instances]
                         for instance in set(uuids)]
        assert sorted(columns.instance_rows(uuids).tolist()) == sorted(sum(rows_per_uuid, []))
        assert columns.rows_of_instances(uuids).tolist() == sorted(set(sum(rows_per_uuid, [])))
        assert columns.instance_rows(uuids).dtype == columns.rows_of_instances(uuids).dtype == np.int32
    for row, host in enumerate(fleet.hosts):
        assert columns.instances_of(row) == list(host.instances)


@pytest.mark.parametrize("schema_name", ["SCHEMA", "DELTA_SCHEMA"])
def test_the_docs_table_is_the_declared_schema(schema_name):
    """docs/architecture.md's tables are engine/column_schema.py's, generated (see their markers)."""
    docs = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    marker = f"<!-- generated: engine.column_schema.markdown_table({schema_name}) -->\n"
    assert marker in docs
    table = docs.split(marker, 1)[1].split("\n<!-- end generated -->", 1)[0]
    assert table == column_schema.markdown_table(getattr(column_schema, schema_name))


@settings(max_examples=40, deadline=None)
@given(fleets())
def test_every_built_fleet_matches_the_schema(fleet):
    column_schema.check(build_columns(fleet).arrays)


@settings(max_examples=150, deadline=None)
@given(fleets(max_hosts=16), st.lists(st.text(max_size=12), max_size=8))
def test_host_lookup_matches_the_model(fleet, others):
    """Columns.row_of (a binary search in C over the name heap) finds each host's row and
    nothing else: prefixes, extensions and other names are absent."""
    columns = as_snapshot(build_columns(fleet))
    rows = {host.name: row for row, host in enumerate(fleet.hosts)}
    near = [name + suffix for name in list(rows)[:3] for suffix in ("", "x", "\x00")] + \
        [name[:-1] for name in list(rows)[:3]]
    for name in [*rows, *near, *others, "", "\uffff" * 3]:
        assert columns.row_of(name) == rows.get(name)


def test_host_lookup_of_a_damaged_heap_finds_nothing():
    """Offsets and order entries come from a segment: out of range, the search ends as absent
    instead of reading past the heap."""
    columns = build_columns(Fleet(tuple(Host(f"host-{index}") for index in range(5))))
    offsets = columns.arrays["host_name_offsets"].copy()
    order = columns.arrays["host_name_order"].copy()
    heap = columns.arrays["host_name_bytes"]
    assert _fastfilters.find_in_sorted_heap(offsets, heap, order, b"host-3") == 3
    offsets[4] = len(heap) + 1000
    assert _fastfilters.find_in_sorted_heap(offsets, heap, order, b"host-3") == -1
    order[2] = 99
    assert _fastfilters.find_in_sorted_heap(columns.arrays["host_name_offsets"], heap, order, b"host-3") == -1
