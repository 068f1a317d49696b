"""splice(base, upserted, removed, aggregates) is build_columns of the fleet it describes, array for
array (dtype, shape, bytes) and dict for dict (values and order)."""
from __future__ import annotations

import dataclasses
import random
import uuid

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from placecheck_engine import column_schema
from placecheck_engine.columns import Columns, _distinct_rows, _uuid_hash, build_columns
from placecheck_engine.columns_splice import _distinct_memberships, splice
from placecheck_engine.model import Aggregate, Fleet, Host, Inventory
from tests.fleetgen import ZONE_METADATA, fleets, host_names, hosts
from tests.test_rules_kernel import as_snapshot


def assert_same_columns(actual: Columns, expected: Columns) -> None:
    column_schema.check(dict(actual.arrays))
    assert list(dict.keys(actual.arrays)) == list(dict.keys(expected.arrays))
    for name in dict.keys(expected.arrays):
        got, want = dict.__getitem__(actual.arrays, name), dict.__getitem__(expected.arrays, name)
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        assert got.tobytes() == want.tobytes(), name
    assert list(actual.dicts) == list(expected.dicts)
    for name, value in expected.dicts.items():
        assert actual.dicts[name] == value, name
        if name == "host_profiles":  # stats in the same order too
            assert [list(profile["stats"].items()) for profile in actual.dicts[name]] == \
                   [list(profile["stats"].items()) for profile in value]


def spliced_fleet(fleet: Fleet, upserted: list[Host], removed: set[str], aggregates: list[Aggregate]) -> Fleet:
    hosts = {host.name: host for host in fleet.hosts}
    for name in removed:
        hosts.pop(name, None)
    hosts.update((host.name, host) for host in upserted)
    return Fleet(hosts=tuple(hosts.values()), aggregates=tuple(aggregates))


def members_changed(fleet: Fleet, removed: set[str], aggregates: list[Aggregate]) -> set[int]:
    """The ids of the aggregates whose members among the hosts the fleet keeps differ from before."""
    names = {host.name for host in fleet.hosts} - removed
    before = {aggregate.id: aggregate.hosts & names for aggregate in fleet.aggregates}
    return {aggregate.id for aggregate in aggregates if before.get(aggregate.id) != aggregate.hosts & names}


@st.composite
def changes(draw, fleet: Fleet) -> tuple[list[Host], set[str], list[Aggregate]]:
    names = [host.name for host in fleet.hosts]
    some_names = st.one_of(st.sampled_from(names), host_names) if names else host_names
    removed = set(draw(st.lists(some_names, max_size=len(names) + 1)))
    # Names base has, names it has not, removed ones (appended again), some twice (the last counts).
    upserted_names = draw(st.lists(some_names, max_size=6))
    upserted = [draw(hosts(name)) for name in upserted_names]
    new_names = sorted(set(names) | set(upserted_names) | {"not-a-host"})
    aggregates = []
    for aggregate in fleet.aggregates:
        choice = draw(st.sampled_from(("keep", "keep", "strip removed", "drop", "members", "metadata")))
        if choice == "keep":
            aggregates.append(aggregate)
        elif choice == "strip removed":  # as RemoveHosts leaves them
            aggregates.append(dataclasses.replace(aggregate, hosts=aggregate.hosts - removed))
        elif choice == "members":
            aggregates.append(dataclasses.replace(aggregate, hosts=frozenset(
                draw(st.lists(st.sampled_from(new_names), max_size=len(new_names))))))
        elif choice == "metadata":
            aggregates.append(dataclasses.replace(aggregate, name=aggregate.name + "'", metadata={
                "availability_zone": draw(st.sampled_from(ZONE_METADATA))}))
    taken = {aggregate.id for aggregate in fleet.aggregates}
    for aggregate_id in draw(st.lists(st.integers(1, 200).filter(lambda i: i not in taken), max_size=2,
                                      unique=True)):
        aggregates.append(Aggregate(aggregate_id, f"new{aggregate_id}", frozenset(
            draw(st.lists(st.sampled_from(new_names), max_size=len(new_names))))))
    return upserted, removed, draw(st.permutations(aggregates))


@settings(max_examples=300, deadline=None)
@given(fleets(max_hosts=8), st.data())
def test_splice_is_build_columns_of_the_new_fleet(fleet, data):
    """Splices in a row, each on the last one's columns as a snapshot reader sees them (read-only
    arrays, dicts through JSON), told which aggregates changed and not."""
    columns = as_snapshot(build_columns(fleet))
    for _ in range(data.draw(st.integers(1, 3), label="splices")):
        upserted, removed, aggregates = data.draw(changes(fleet), label="change")
        new_fleet = spliced_fleet(fleet, upserted, removed, aggregates)
        expected = build_columns(new_fleet)
        assert_same_columns(splice(columns, upserted, removed, aggregates, members_changed=None), expected)
        spliced = splice(columns, upserted, removed, aggregates,
                         members_changed=members_changed(fleet, removed, aggregates))
        assert_same_columns(spliced, expected)
        columns, fleet = as_snapshot(spliced), new_fleet


def host(name: str, **fields) -> Host:
    return Host(name=name, **fields)


def check_splice(fleet: Fleet, upserted: list[Host], removed: set[str] = frozenset(),
                 aggregates: list[Aggregate] | None = None) -> Columns:
    aggregates = list(fleet.aggregates) if aggregates is None else aggregates
    spliced = splice(build_columns(fleet), upserted, removed, aggregates, members_changed=None)
    assert_same_columns(spliced, build_columns(spliced_fleet(fleet, upserted, removed, aggregates)))
    return spliced


def test_removing_every_host():
    fleet = Fleet((host("a", traits=frozenset({"T"})), host("b", instances=("x",))),
                  (Aggregate(1, "one", frozenset({"a"})),))
    spliced = check_splice(fleet, [], {"a", "b"})
    assert spliced.host_count == 0


def test_replacing_every_host_and_removing_all_the_others():
    fleet = Fleet((host("a"), host("b"), host("c")))
    spliced = check_splice(fleet, [host("c", traits=frozenset({"T"})), host("a")], {"b"})
    assert [spliced.host_name(row) for row in range(spliced.host_count)] == ["a", "c"]


def test_upserting_into_an_empty_fleet():
    check_splice(Fleet(), [host("b", host_ip="10.0.0.1"), host("a", metrics={"m": 1.0})])
    check_splice(Fleet(aggregates=(Aggregate(3, "x", frozenset({"a"})),)), [host("a")])


def test_names_appear_and_disappear():
    """Classes, traits, metrics, IPs, profiles and aggregates only the changed hosts had go; new ones
    sort in among the others."""
    fleet = Fleet((
        host("m", resources={"VCPU": Inventory(4)}, traits=frozenset({"B"}), host_ip="10.0.0.2",
             metrics={"x": 1.0}, stats={"s": "1"}),
        host("n", resources={"DISK_GB": Inventory(9), "VCPU": Inventory(2)}, traits=frozenset({"D"}),
             host_ip="10.0.0.9", metrics={"z": 2.0, "y": float("nan")}, stats={"t": "2", "s": "1"}),
    ), (Aggregate(5, "five", frozenset({"n"})), Aggregate(9, "nine", frozenset({"m"}))))
    check_splice(fleet, [host("n", resources={"MEMORY_MB": Inventory(1)}, traits=frozenset({"A", "C"}),
                              host_ip="10.0.0.1", metrics={"w": 3.0}, stats={"s": "1", "t": "2"})],
                 aggregates=[Aggregate(7, "seven", frozenset({"n", "m"})), fleet.aggregates[1]])
    check_splice(fleet, [host("a", traits=frozenset(f"T{i:03}" for i in range(70)))], {"n"})


def test_bitsets_grow_and_shrink_a_word():
    """Over 64 traits or aggregates, and back: the bitsets' word count follows."""
    many = frozenset(f"T{index:03}" for index in range(70))
    fleet = Fleet((host("a", traits=many), host("b", traits=frozenset({"T005", "U"}))),
                  tuple(Aggregate(index, f"agg{index}", frozenset({"a", "b"} if index % 3 else {"b"}))
                        for index in range(70)))
    check_splice(fleet, [], {"a"})
    check_splice(fleet, [host("b", traits=many)], (), list(fleet.aggregates[:60]))
    spliced = splice(build_columns(fleet), [host("c")], (), fleet.aggregates[10:], members_changed=())
    assert_same_columns(spliced, build_columns(Fleet(fleet.hosts + (host("c"),), fleet.aggregates[10:])))
    assert spliced.arrays["aggregates"].shape == (3, 1)


def test_few_aggregate_members_among_many_hosts():
    """Few names to look up (a binary search each, not a dict of every name)."""
    fleet = Fleet(tuple(host(f"h{index}") for index in range(60)), (Aggregate(1, "one", frozenset({"h1", "h2"})),))
    aggregates = [Aggregate(1, "one", frozenset({"h3", "nope"})), Aggregate(2, "two", frozenset({"h39"}))]
    assert_same_columns(splice(build_columns(fleet), [], (), aggregates, members_changed={1}),
                        build_columns(Fleet(fleet.hosts, tuple(aggregates))))


def test_non_canonical_instance_ids():
    uuid_text = "00000000-0000-4000-8000-000000000001"
    fleet = Fleet((host("a", instances=("i-1", uuid_text.upper(), "é")), host("b", instances=(uuid_text, "i-2")),
                   host("c", instances=("{" + uuid_text + "}",))))
    check_splice(fleet, [host("b", instances=("i-3", uuid_text, "x" * 36))], {"a"})
    check_splice(fleet, [host("d", instances=("i-1",))], {"c"})


def test_semantics_of_a_dict_of_hosts_by_name():
    """Removed first (unknown names ignored), then upserted: a removed name comes back at the end;
    a name upserted twice is the last host, at the first one's place."""
    fleet = Fleet((host("a"), host("b"), host("c")))
    spliced = check_splice(fleet, [host("d", failed_builds=1), host("b", up=False), host("a", failed_builds=2),
                                   host("d", failed_builds=3)], {"a", "zz"})
    assert [spliced.host_name(row) for row in range(spliced.host_count)] == ["b", "c", "d", "a"]
    assert spliced.arrays["failed_builds"].tolist() == [0, 0, 3, 2]


def test_no_base():
    aggregates = [Aggregate(1, "one", frozenset({"b"}))]
    assert_same_columns(splice(None, [host("b"), host("a")], {"a"}, aggregates, members_changed=None),
                        build_columns(Fleet((host("b"), host("a")), tuple(aggregates))))


def random_uuids(rng: random.Random, count: int) -> tuple[str, ...]:
    return tuple(str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(count))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 40), st.integers(0, 10))
def test_uuid_slots_at_high_load(seed, upserts, removals):
    """Enough uuids that the hash table's runs are long, merge and wrap around its end."""
    rng = random.Random(seed)
    fleet = Fleet(tuple(host(f"h{index}", instances=random_uuids(rng, 10)) for index in range(300)))
    names = [h.name for h in fleet.hosts]
    removed = set(rng.sample(names, removals))
    upserted = [host(name, instances=random_uuids(rng, rng.randint(8, 11)))
                for name in rng.sample([n for n in names if n not in removed] + [f"new{i}" for i in range(20)],
                                       upserts)]
    slots = build_columns(fleet).arrays["instance_slots"]
    assert np.count_nonzero(slots >= 0) > 0.7 * len(slots)
    check_splice(fleet, upserted, removed)


WORDS = st.sampled_from([0, 1, 2, 2**62, 2**63, 2**63 + 1, 2**64 - 1])


@settings(deadline=None)
@given(st.integers(1, 2).flatmap(lambda width: st.lists(st.lists(WORDS, min_size=width, max_size=width),
                                                        min_size=1, max_size=10)))
def test_distinct_memberships_orders_them_as_distinct_rows(rows):
    bitset = np.array(rows, dtype=np.uint64)
    expected_sets, expected_ids = _distinct_rows(bitset)
    sets, ids = _distinct_memberships(bitset)
    assert sets == expected_sets
    assert ids.dtype == expected_ids.dtype and ids.tolist() == expected_ids.tolist()


def uuids_by_home(slot_count: int, per_home: int) -> dict[int, list[str]]:
    """Canonical uuids grouped by the slot their hash takes in a table of `slot_count` slots."""
    rng = random.Random(0)
    pool = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(slot_count * per_home * 8)]
    homes = _uuid_hash(np.frombuffer(b"".join(u.bytes for u in pool), dtype="<u8").reshape(-1, 2)) \
        & np.uint64(slot_count - 1)
    by_home = {}
    for home, uuid_ in zip(homes.tolist(), pool):
        by_home.setdefault(home, []).append(str(uuid_))
    return {home: uuids[:per_home] for home, uuids in by_home.items()}


CROWDED_HOMES = uuids_by_home(32, 6)
# Homes bunched up (and across the table's end), so runs are long and merge.
CROWDED_UUIDS = st.sampled_from([uuid_ for home in (*range(0, 8), 30, 31) for uuid_ in CROWDED_HOMES[home]])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(CROWDED_UUIDS, min_size=3, max_size=3), min_size=5, max_size=7), st.data())
def test_uuid_slots_in_crowded_runs(instance_lists, data):
    """15 to 21 canonical entries (a 32-slot table, mostly before and after: 12 to 23 entries),
    their hashes in a few slots: runs that gain or lose an entry reach the runs after them."""
    fleet = Fleet(tuple(host(f"h{index}", instances=tuple(instances))
                        for index, instances in enumerate(instance_lists)))
    names = [h.name for h in fleet.hosts]
    removed = set(data.draw(st.lists(st.sampled_from(names), max_size=1)))
    upserted = [host(name, instances=tuple(data.draw(st.lists(CROWDED_UUIDS, min_size=2, max_size=4))))
                for name in data.draw(st.lists(st.sampled_from(names + ["new"]), max_size=3, unique=True))]
    check_splice(fleet, upserted, removed)
