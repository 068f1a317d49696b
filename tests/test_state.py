"""The state owner's fleet: each change is kept in the store and published as a generation; a refused
change changes nothing; a restart recovers exactly what was acknowledged."""
from __future__ import annotations

import sqlite3
import threading
import uuid
from contextlib import closing

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from placecheck_engine import state as state_module
from placecheck_engine import store as store_module
from placecheck_engine.columns import build_columns, host_at
from placecheck_engine.model import Aggregate, Fleet, Host, InvalidField, Inventory
from placecheck_engine.snapshot import SnapshotReader, SnapshotWriter
from placecheck_engine.state import FleetState, HostUsage
from placecheck_engine.store import FleetStore
from fleetgen import INSTANCE_UUIDS, fleets, numa_cells, pci_pools


def host(name: str, vcpu_used: int = 0, **changes) -> Host:
    return Host(name=name, resources={"VCPU": Inventory(total=16, allocation_ratio=4.0, used=vcpu_used),
                                      "MEMORY_MB": Inventory(total=65536, reserved=512)}, **changes)


FLEET = Fleet(
    hosts=(host("compute-1"), host("compute-2", 4), host("compute-3")),
    aggregates=(Aggregate(id=1, name="az1", hosts=frozenset({"compute-1", "compute-2"}),
                          metadata={"availability_zone": "az1"}),
                Aggregate(id=2, name="ssd", hosts=frozenset({"compute-2"}))),
)


@pytest.fixture
def writer(prefix):
    with SnapshotWriter(prefix) as snapshot_writer:
        yield snapshot_writer


@pytest.fixture
def store(tmp_path):
    fleet_store = FleetStore(str(tmp_path / "state"))
    yield fleet_store
    fleet_store.close()


@pytest.fixture
def state(writer, store):
    fleet_state = FleetState(writer, store)
    fleet_state.replace(FLEET)
    return fleet_state


@pytest.fixture
def reader(prefix):
    return SnapshotReader(prefix)


def published(reader) -> dict:
    """What a reader sees of the fleet: host names, aggregate members, VCPU used (-1: no inventory)."""
    snapshot = reader.current()
    columns = snapshot.columns
    names = [columns.host_name(row) for row in range(columns.host_count)]
    vcpu = columns.resource_class_index("VCPU")
    return {"generation": snapshot.generation, "hosts": names,
            "aggregates": {str(aggregate_id): sorted(name for row, name in enumerate(names)
                                                     if aggregate_id in columns.aggregates_of(row))
                           for aggregate_id in columns.dicts["aggregates"]},
            "vcpu_used": [int(columns.arrays["rc_used"][vcpu, row]) if columns.arrays["rc_present"][vcpu, row] else -1
                          for row in range(columns.host_count)]}


def test_status_before_and_after_the_first_publish(writer, store):
    fleet_state = FleetState(writer, store)
    before = fleet_state.status()
    assert (before.generation, before.host_count, before.aggregate_count, before.snapshot_bytes) == (0, 0, 0, 0)
    assert fleet_state.replace(FLEET) == 1
    after = fleet_state.status()
    assert (after.generation, after.host_count, after.aggregate_count) == (1, 3, 2)
    assert 0 <= after.age_seconds < 5
    assert after.snapshot_bytes == writer.current.nbytes > 0


def test_replace_publishes_the_fleet(state, reader):
    assert published(reader) == {"generation": 1, "hosts": ["compute-1", "compute-2", "compute-3"],
                                 "aggregates": {"1": ["compute-1", "compute-2"], "2": ["compute-2"]},
                                 "vcpu_used": [0, 4, 0]}
    assert state.fleet() == FLEET


def test_upsert_hosts_replaces_in_place_and_appends_new_ones(state, reader):
    assert state.upsert_hosts([host("compute-4", 1), host("compute-2", 9)]) == 2
    view = published(reader)
    assert view["hosts"] == ["compute-1", "compute-2", "compute-3", "compute-4"]
    assert view["vcpu_used"] == [0, 9, 0, 1]


def test_remove_hosts_also_leaves_their_aggregates(state, reader):
    assert state.remove_hosts(["compute-2"]) == 2
    view = published(reader)
    assert view["hosts"] == ["compute-1", "compute-3"]
    assert view["aggregates"] == {"1": ["compute-1"], "2": []}


def test_upsert_and_remove_aggregates(state, reader):
    state.upsert_aggregates([Aggregate(id=2, name="ssd", hosts=frozenset({"compute-3"})),
                             Aggregate(id=7, name="gpu", hosts=frozenset({"compute-1"}))])
    assert published(reader)["aggregates"] == {"1": ["compute-1", "compute-2"], "2": ["compute-3"], "7": ["compute-1"]}
    assert state.remove_aggregates([1, 7]) == 3
    assert published(reader)["aggregates"] == {"2": ["compute-3"]}


def test_an_aggregate_may_name_a_host_before_it_arrives(state, reader):
    state.upsert_aggregates([Aggregate(id=5, hosts=frozenset({"compute-4"}))])
    state.upsert_hosts([host("compute-4")])
    state.remove_hosts(["compute-4"])
    assert state.fleet().aggregates[-1].hosts == frozenset()
    assert published(reader)["aggregates"]["5"] == []


def test_update_usage_replaces_only_what_it_names(state, reader):
    generation = state.update_usage([
        HostUsage(name="compute-3", used={"VCPU": 12}, num_instances=3, instances=("a", "b", "c")),
        HostUsage(name="compute-2", num_io_ops=2),
    ])
    assert generation == 2
    assert published(reader)["vcpu_used"] == [0, 4, 12]
    hosts = {h.name: h for h in state.fleet().hosts}
    assert hosts["compute-3"].instances == ("a", "b", "c") and hosts["compute-3"].num_instances == 3
    assert hosts["compute-3"].resources["MEMORY_MB"] == FLEET.hosts[2].resources["MEMORY_MB"]
    assert (hosts["compute-2"].num_io_ops, hosts["compute-2"].resources) == (2, FLEET.hosts[1].resources)


def unchanged_after(state, reader, change, error_type, match):
    before_fleet, before_view = state.fleet(), published(reader)
    with pytest.raises(error_type, match=match):
        change()
    assert state.fleet() == before_fleet
    assert published(reader) == before_view
    assert state.status().generation == before_view["generation"]


@pytest.mark.parametrize("change, error_type, match", [
    (lambda s: s.remove_hosts(["compute-1", "compute-9"]), KeyError, "compute-9"),
    (lambda s: s.remove_aggregates([2, 99]), KeyError, "99"),
    (lambda s: s.update_usage([HostUsage(name="compute-1", used={"VCPU": 2}), HostUsage(name="ghost")]),
     KeyError, "ghost"),
    (lambda s: s.update_usage([HostUsage(name="compute-1", used={"VCPU": 2}),
                               HostUsage(name="compute-2", used={"DISK_GB": 5})]),
     InvalidField, r"usages\[1\].used.DISK_GB: host 'compute-2' has no DISK_GB inventory"),
    (lambda s: s.update_usage([HostUsage(name="compute-1", used={"VCPU": -1})]), InvalidField, "from 0 to"),
    (lambda s: s.update_usage([HostUsage(name="compute-1", used={"VCPU": 2**53 + 1})]), InvalidField, "from 0 to"),
    (lambda s: s.update_usage([HostUsage(name="compute-1", num_instances=-2)]), InvalidField, "num_instances"),
    (lambda s: s.update_usage([HostUsage(name="compute-1", num_io_ops=2**31)]), InvalidField, "num_io_ops"),
    (lambda s: s.upsert_hosts([host("compute-5", num_instances=2**31)]), InvalidField, r"hosts\[0\].num_instances"),
    (lambda s: s.upsert_hosts([host("compute-5"), Host(name="compute-6", resources={"VCPU": Inventory(total=-1)})]),
     InvalidField, r"hosts\[1\].resources.VCPU.total"),
    (lambda s: s.upsert_hosts([host("compute-5"), host("compute-5")]), InvalidField, "duplicate host name"),
    (lambda s: s.upsert_aggregates([Aggregate(id=3), Aggregate(id=3)]), InvalidField, "duplicate aggregate id 3"),
    (lambda s: s.upsert_aggregates([Aggregate(id=0)]), InvalidField, "id"),
    (lambda s: s.replace(Fleet(hosts=(host("a"), host("a")))), InvalidField, "duplicate host name 'a'"),
])
def test_refused_changes_leave_the_fleet_and_generation_untouched(state, reader, change, error_type, match):
    unchanged_after(state, reader, lambda: change(state), error_type, match)


def test_a_builder_failure_leaves_the_fleet_untouched(state, reader, monkeypatch):
    def broken_splice(*args, **kwargs):
        raise RuntimeError("builder broke")

    monkeypatch.setattr(state_module, "splice", broken_splice)
    unchanged_after(state, reader, lambda: state.upsert_hosts([host("compute-4")]), RuntimeError, "builder broke")


def test_concurrent_changes_are_serialised(state, reader):
    def bump(name: str) -> None:
        for used in range(1, 11):
            state.update_usage([HostUsage(name=name, used={"VCPU": used})])

    threads = [threading.Thread(target=bump, args=(name,)) for name in ("compute-1", "compute-3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    view = published(reader)
    assert view["generation"] == 21
    assert view["vcpu_used"] == [10, 4, 10]


def now_and_then(values):
    """Mostly None (unchanged), else empty or a drawn value."""
    return st.integers(0, 11).flatmap(lambda pick: values if pick == 0 else st.just(() if pick == 1 else None))


@st.composite
def fleets_and_usage_updates(draw):
    fleet = draw(fleets(max_hosts=10))
    updates = []
    for _ in range(draw(st.integers(1, 3))):
        usages = []
        for host_ in draw(st.lists(st.sampled_from(fleet.hosts), min_size=1, max_size=4)):
            classes = draw(st.lists(st.sampled_from(sorted(host_.resources)), unique=True)) if host_.resources else []
            counts = st.none() | st.integers(0, 2**31 - 1)
            usages.append(HostUsage(
                name=host_.name, used={rc: draw(st.integers(0, 2**40)) for rc in classes},
                num_instances=draw(counts), num_io_ops=draw(counts),
                instances=draw(st.none() | st.lists(st.sampled_from(INSTANCE_UUIDS + (str(uuid.uuid4()),)),
                                                    max_size=4).map(tuple)),
                # now and then the pinned CPUs, pages and devices taken: a host change, not a delta
                numa_cells=draw(now_and_then(numa_cells())), pci_pools=draw(now_and_then(pci_pools()))))
        updates.append(usages)
    return fleet, updates


def assert_same_columns(patched, rebuilt, fleet: Fleet) -> None:
    """Equal arrays and dicts, but for the instance section (a delta generation keeps its base's and
    overlays the changed lists): every instance lookup gives the rebuild's answer."""
    assert patched.arrays.keys() == rebuilt.arrays.keys()
    for name, array in rebuilt.arrays.items():
        if name.startswith("instance_"):
            continue
        assert patched.arrays[name].dtype == array.dtype, name
        np.testing.assert_array_equal(patched.arrays[name], array, err_msg=name)
    assert patched.dicts == rebuilt.dicts
    uuids = sorted({uuid_ for host_ in fleet.hosts for uuid_ in host_.instances} | set(INSTANCE_UUIDS))
    for row in range(rebuilt.host_count):
        assert patched.instances_of(row) == rebuilt.instances_of(row), row
    for some in [uuids, *([uuid_] for uuid_ in uuids), uuids[::2]]:
        assert patched.rows_of_instances(some).tolist() == rebuilt.rows_of_instances(some).tolist(), some
        assert sorted(patched.instance_rows(some).tolist()) == sorted(rebuilt.instance_rows(some).tolist()), some


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleets_and_usage_updates(), st.sampled_from([state_module.DELTA_MIN_ROWS, 2]))
def test_usage_updates_publish_the_columns_a_rebuild_would_give(prefix, tmp_path, fleet_and_updates, delta_rows):
    """Usage updates are published as deltas on the base and, past the delta limit, as a new base
    patched from the last; what the writer and a reader make of each is the rebuild's."""
    fleet, updates = fleet_and_updates
    unique = uuid.uuid4().hex[:8]
    with SnapshotWriter(f"{prefix}-{unique}") as engine_writer, closing(FleetStore(str(tmp_path / unique))) as store, \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_module, "DELTA_MIN_ROWS", delta_rows)
        fleet_state = FleetState(engine_writer, store)
        fleet_state.replace(fleet)
        reader = SnapshotReader(f"{prefix}-{unique}")
        for usages in updates:
            generation = fleet_state.update_usage(usages)
            rebuilt = build_columns(fleet_state.fleet())
            changed_since_base = len(fleet_state._latest.usage)
            assert (engine_writer.current.base_generation != 0) == (0 < changed_since_base <= delta_rows)
            assert reader.current().generation == generation
            for columns in (engine_writer.current.columns, reader.current().columns):
                assert_same_columns(columns, rebuilt, fleet_state.fleet())


# ---------------------------------------------------------------- the store: durable, recovered exactly

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fleets_and_usage_updates(), st.booleans())
def test_a_restart_recovers_exactly_the_acknowledged_fleet(prefix, tmp_path, fleet_and_updates, checkpoint_often):
    """From the log alone, or from checkpoints the writes made along the way (every new base once
    the log holds anything)."""
    fleet, updates = fleet_and_updates
    directory = tmp_path / uuid.uuid4().hex[:8]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_module, "CHECKPOINT_LOG_MIN_BYTES", 0 if checkpoint_often else 2**40)
        patch.setattr(store_module, "CHECKPOINT_LOG_SHARE", 2**40 if checkpoint_often else 1)
        with closing(FleetStore(str(directory))) as store, SnapshotWriter(f"{prefix}-a") as writer:
            fleet_state = FleetState(writer, store)
            epoch = fleet_state.epoch
            fleet_state.replace(fleet)
            for usages in updates:
                fleet_state.update_usage(usages)
            fleet_state.remove_hosts([fleet.hosts[0].name])
            fleet_state.upsert_hosts([fleet.hosts[0], host("appended")])
            fleet_state.upsert_aggregates([Aggregate(id=999, hosts=frozenset({"appended", fleet.hosts[-1].name}))])
            acknowledged, generation = fleet_state.fleet(), fleet_state.status().generation
    with closing(FleetStore(str(directory))) as store, SnapshotWriter(f"{prefix}-b") as writer:
        assert (store.recovered.checkpoint is not None, bool(store.recovered.log)) == \
               ((True, False) if checkpoint_often else (True, True))
        recovered = FleetState(writer, store)
        assert recovered.fleet() == acknowledged
        assert (recovered.status().generation, recovered.epoch) == (generation, epoch)
        assert writer.current.generation == generation and writer.current.epoch == epoch
        assert_same_columns(writer.current.columns, build_columns(acknowledged), acknowledged)
        assert recovered.upsert_hosts([host("after-restart")]) == generation + 1


def test_a_new_store_starts_a_new_history_with_nothing_published(tmp_path, prefix):
    epochs = set()
    for name in ("one", "two"):
        with closing(FleetStore(str(tmp_path / name))) as store, SnapshotWriter(f"{prefix}-{name}") as writer:
            fleet_state = FleetState(writer, store)
            assert writer.current is None and fleet_state.status().generation == 0
            epochs.add(fleet_state.epoch)
    assert len(epochs) == 2 and all(len(epoch) == 16 for epoch in epochs)


def test_an_empty_replace_is_refused_unless_asked_for(state, reader):
    unchanged_after(state, reader, lambda: state.replace(Fleet()), InvalidField, "fleet.hosts")
    assert state.replace(Fleet(), allow_empty=True) == 2
    assert state.fleet() == Fleet()


@pytest.mark.parametrize("damage", [b"this is not an SQLite database file, not at all", b"\0" * 4096])
def test_a_damaged_store_file_is_refused_naming_it(tmp_path, damage):
    from placecheck_engine.store import STORE_FILE, StoreDamaged

    with closing(FleetStore(str(tmp_path))):
        pass
    path = tmp_path / STORE_FILE
    with open(path, "r+b") as file:
        file.write(damage)
    with pytest.raises(StoreDamaged, match=f"{path} is damaged"):
        FleetStore(str(tmp_path))


def test_concurrent_writes_share_commits(state, store, monkeypatch):
    commits = []
    real_commit = store._commit
    monkeypatch.setattr(store, "_commit", lambda changes: (commits.append(len(changes)), real_commit(changes)))
    writers = 8
    barrier = threading.Barrier(writers)

    def bump(index: int) -> None:
        barrier.wait()
        for used in range(1, 11):
            state.update_usage([HostUsage(name=f"compute-{index % 3 + 1}", used={"VCPU": used})])

    threads = [threading.Thread(target=bump, args=(index,)) for index in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(commits) == writers * 10
    assert len(commits) < writers * 10, "no two writes shared a commit"
    assert state.status().generation == 1 + writers * 10


def test_a_change_the_store_cannot_keep_is_undone_with_those_queued_on_it(state, store, reader, monkeypatch):
    import sqlite3

    from placecheck_engine.store import StoreFull

    before_fleet, before_view = state.fleet(), published(reader)
    real_commit = store._commit

    def disk_full(changes):
        error = sqlite3.OperationalError("database or disk is full")
        error.sqlite_errorcode = sqlite3.SQLITE_FULL
        raise error

    monkeypatch.setattr(store, "_commit", disk_full)
    with pytest.raises(StoreFull, match="disk is full"):
        state.update_usage([HostUsage(name="compute-1", used={"VCPU": 7})])
    assert state.fleet() == before_fleet and published(reader) == before_view
    monkeypatch.setattr(store, "_commit", real_commit)
    assert state.update_usage([HostUsage(name="compute-2", used={"VCPU": 3})]) == 2
    assert published(reader)["vcpu_used"] == [0, 3, 0]  # compute-1's refused 7 is nowhere


def test_a_store_with_an_unreadable_row_is_refused_naming_it(tmp_path, writer):
    import sqlite3

    from placecheck_engine.store import STORE_FILE, StoreDamaged

    with closing(FleetStore(str(tmp_path))) as store:
        fleet_state = FleetState(writer, store)
        fleet_state.replace(FLEET)
        fleet_state.upsert_hosts([host("compute-4")])
    with closing(sqlite3.connect(tmp_path / STORE_FILE)) as connection, connection:
        connection.execute("UPDATE log SET body = '{\"hosts\": [' WHERE generation = 2")
    with pytest.raises(StoreDamaged, match=f"{tmp_path / STORE_FILE} is damaged .*unreadable row"):
        FleetStore(str(tmp_path))


def test_a_checkpoint_that_fails_its_checksum_is_refused_naming_it(tmp_path, writer):
    import sqlite3

    from placecheck_engine.store import STORE_FILE, StoreDamaged

    with closing(FleetStore(str(tmp_path))) as store:
        FleetState(writer, store).replace(FLEET)
    with closing(sqlite3.connect(tmp_path / STORE_FILE)) as connection, connection:
        data = bytearray(connection.execute("SELECT data FROM checkpoint WHERE name = 'rc_used'").fetchone()[0])
        data[0] ^= 1
        connection.execute("UPDATE checkpoint SET data = ? WHERE name = 'rc_used'", (bytes(data),))
    with pytest.raises(StoreDamaged, match="checkpoint rc_used part 0 fails its checksum"):
        FleetStore(str(tmp_path))


@settings(max_examples=150, deadline=None)
@given(fleets(max_hosts=12))
def test_host_at_reads_back_every_host_build_columns_was_given(fleet):
    """The state owner keeps no Host per host: what it reads back from the columns is what it wrote."""
    columns = build_columns(fleet)
    assert tuple(host_at(columns, row) for row in range(columns.host_count)) == fleet.hosts


def test_an_unexpected_commit_failure_fails_the_write_not_the_commit_thread(state, store, reader, monkeypatch):
    from placecheck_engine.store import StoreError

    before_fleet = state.fleet()
    real_apply = store._apply

    def broken(change):
        raise TypeError("not a store error")

    monkeypatch.setattr(store, "_apply", broken)
    with pytest.raises(StoreError, match="not a store error"):
        state.update_usage([HostUsage(name="compute-1", used={"VCPU": 7})])
    assert state.fleet() == before_fleet
    monkeypatch.setattr(store, "_apply", real_apply)
    assert state.update_usage([HostUsage(name="compute-2", used={"VCPU": 3})]) == 2
    assert published(reader)["vcpu_used"] == [0, 3, 0]


def test_a_store_of_an_earlier_format_is_refused_naming_both_formats(tmp_path):
    """Format 2's checkpoint has no NUMA or PCI columns: it cannot be read, and saying so beats
    failing on a missing array."""
    directory = str(tmp_path / "state")
    with closing(FleetStore(directory)) as fleet_store:
        path = fleet_store.path
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("UPDATE meta SET value = '2' WHERE key = 'format'")
    with pytest.raises(store_module.StoreDamaged, match=f"store format 2, this version reads {store_module.STORE_FORMAT}"):
        FleetStore(directory)
