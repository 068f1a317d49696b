"""The shared-memory snapshot: round trip, generations, torn reads, refusal of foreign segments."""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import threading
import time

import numpy as np
import pytest

from placecheck_engine.column_schema import SchemaError
from placecheck_engine.columns import build_columns, usage_delta
from placecheck_engine.demo import demo_fleet
from placecheck_engine.snapshot import (
    HEADER_SIZE, SHM_DIR, SnapshotError, SnapshotReader, SnapshotWriter, control_name, segment_name,
)


class StandInColumns:
    """Any Columns-shaped value: the snapshot layer must not care which arrays it holds."""

    def __init__(self, arrays: dict, dicts: dict):
        self.arrays = arrays
        self.dicts = dicts


def make_columns(arrays: dict, dicts: dict) -> StandInColumns:
    return StandInColumns(arrays, dicts)


def columns_for_generation(generation: int, rows: int = 1000) -> StandInColumns:
    """Every array filled with a value derived from the generation, so a mix of two is visible."""
    return StandInColumns(
        {
            "wide": np.full((3, rows), generation * 7, dtype=np.int64),
            "flags": np.full(rows, generation % 251, dtype=np.uint8),
            "bits": np.full((rows, 2), generation, dtype=np.uint64),
            "ratio": np.full(rows, generation / 4, dtype=np.float64),
        },
        {"generation": generation, "names": [f"g{generation}"] * 3},
    )


def generation_mismatches(columns, generation: int) -> list[str]:
    arrays = columns.arrays
    expected = {"wide": generation * 7, "flags": generation % 251, "bits": generation, "ratio": generation / 4}
    wrong = [name for name, value in expected.items() if not (arrays[name] == value).all()]
    if columns.dicts != {"generation": generation, "names": [f"g{generation}"] * 3}:
        wrong.append("dicts")
    return wrong


@pytest.fixture
def writer(prefix):
    with SnapshotWriter(prefix, make_columns) as snapshot_writer:
        yield snapshot_writer


def segments_of(prefix: str) -> list[str]:
    return sorted(entry for entry in os.listdir(SHM_DIR) if entry.startswith(prefix + "."))


def test_round_trip_gives_read_only_aligned_views(prefix, writer):
    arrays = {
        "matrix": np.arange(35, dtype=np.int64).reshape(5, 7),
        "odd_sized": np.arange(3, dtype=np.uint8),
        "after_odd": np.linspace(0, 1, 9),
        "bitset": np.array([[1, 2**63]], dtype=np.uint64),
        "empty": np.zeros((0, 4), dtype=np.int32),
        "fortran_order": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
    }
    dicts = {"traits": ["HW_CPU_X86_AVX2"], "metadata": [{"availability_zone": "az1"}]}
    published = writer.publish(StandInColumns(arrays, dicts))

    snapshot = SnapshotReader(prefix, make_columns).current()

    assert snapshot.generation == published.generation == 1
    assert snapshot.nbytes == os.path.getsize(os.path.join(SHM_DIR, segment_name(prefix, 1)))
    assert abs(snapshot.published_at - time.time()) < 5
    assert snapshot.columns.dicts == dicts
    assert set(snapshot.columns.arrays) == set(arrays)
    for name, original in arrays.items():
        shared = snapshot.columns.arrays[name]
        assert shared.dtype == original.dtype and shared.shape == original.shape
        assert np.array_equal(shared, original)
        assert not shared.flags.writeable and not shared.flags.owndata
        assert shared.flags.c_contiguous
        if shared.size:
            assert shared.ctypes.data % 64 == 0
    with pytest.raises(ValueError):
        snapshot.columns.arrays["matrix"].flags.writeable = True


def test_current_is_cached_until_the_generation_changes(prefix, writer):
    reader = SnapshotReader(prefix, make_columns)
    writer.publish(columns_for_generation(1))
    first = reader.current()
    assert reader.current() is first
    writer.publish(columns_for_generation(2))
    second = reader.current()
    assert second.generation == 2 and not generation_mismatches(second.columns, 2)
    assert writer.current.generation == 2


def test_nothing_published_yet_and_wait_for_times_out(prefix):
    reader = SnapshotReader(prefix, make_columns)
    assert reader.current() is None  # no writer at all
    with SnapshotWriter(prefix, make_columns) as snapshot_writer:
        assert reader.current() is None  # a writer, no generation yet
        started = time.monotonic()
        assert reader.wait_for(1, timeout_s=0.05) is None
        assert 0.05 <= time.monotonic() - started < 1
        snapshot_writer.publish(columns_for_generation(1))
        assert reader.wait_for(1, timeout_s=1).generation == 1
        assert reader.wait_for(2, timeout_s=0.01) is None


def test_old_generations_are_unlinked_but_stay_readable_while_mapped(prefix, writer):
    reader = SnapshotReader(prefix, make_columns)
    writer.publish(columns_for_generation(1))
    held = reader.current()
    writer.publish(columns_for_generation(2))
    writer.publish(columns_for_generation(3))

    assert segments_of(prefix) == [control_name(prefix), segment_name(prefix, 3)]
    assert not generation_mismatches(held.columns, 1)
    assert reader.current().generation == 3


def test_close_unlinks_everything_and_readers_see_no_snapshot(prefix):
    reader = SnapshotReader(prefix, make_columns)
    snapshot_writer = SnapshotWriter(prefix, make_columns)
    snapshot_writer.publish(columns_for_generation(1))
    assert reader.current().generation == 1
    snapshot_writer.close()
    assert segments_of(prefix) == []
    assert reader.current() is None
    # A new writer starts over under a new control segment and the reader follows it.
    with SnapshotWriter(prefix, make_columns) as successor:
        successor.publish(columns_for_generation(1))
        assert not generation_mismatches(reader.current().columns, 1)


def test_second_writer_on_a_prefix_is_refused(prefix, writer):
    with pytest.raises(SnapshotError, match="another writer"):
        SnapshotWriter(prefix, make_columns)


def test_object_arrays_are_refused_and_nothing_is_published(prefix, writer):
    with pytest.raises(TypeError, match="names"):
        writer.publish(StandInColumns({"names": np.array(["a", None], dtype=object)}, {}))
    assert writer.current is None
    assert segments_of(prefix) == [control_name(prefix)]


def _attach_and_exit(prefix: str, result_queue) -> None:
    snapshot = SnapshotReader(prefix, make_columns).current()
    result_queue.put(None if snapshot is None else snapshot.generation)


def test_reader_process_exit_unlinks_nothing(prefix, writer):
    writer.publish(columns_for_generation(1))
    before = segments_of(prefix)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_attach_and_exit, args=(prefix, results))
    child.start()
    assert results.get(timeout=30) == 1
    child.join(timeout=30)
    assert child.exitcode == 0
    assert segments_of(prefix) == before


def _publish_and_crash(prefix: str) -> None:
    snapshot_writer = SnapshotWriter(prefix, make_columns)
    snapshot_writer.publish(columns_for_generation(1))
    snapshot_writer.publish(columns_for_generation(2))
    os._exit(0)  # no close(): the control record still names generation 2


def test_a_new_writer_takes_over_after_a_crash_without_reusing_numbers(prefix):
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_publish_and_crash, args=(prefix,))
    child.start()
    child.join(timeout=30)
    reader = SnapshotReader(prefix, make_columns)
    assert reader.current().generation == 2

    with SnapshotWriter(prefix, make_columns) as successor:
        assert segments_of(prefix) == [control_name(prefix)]  # the dead writer's segment is gone
        assert reader.current() is None
        assert successor.publish(columns_for_generation(3)).generation == 3
        assert not generation_mismatches(reader.current().columns, 3)


def _corrupt(prefix: str, generation: int, offset: int, data: bytes) -> None:
    with open(os.path.join(SHM_DIR, segment_name(prefix, generation)), "r+b") as segment:
        segment.seek(offset)
        segment.write(data)


@pytest.mark.parametrize("offset, data, message", [
    (0, b"NOTOURS!", "not a placecheck snapshot"),
    (8, (99).to_bytes(4, "little"), "layout version 99"),
    (HEADER_SIZE + 5, b"\xff", "checksum"),
])
def test_foreign_or_damaged_segments_are_refused(prefix, writer, offset, data, message):
    writer.publish(columns_for_generation(1))
    _corrupt(prefix, 1, offset, data)
    with pytest.raises(SnapshotError, match=message):
        SnapshotReader(prefix, make_columns).current()


def test_foreign_control_segment_is_refused(prefix):
    with open(os.path.join(SHM_DIR, control_name(prefix)), "wb") as control:
        control.write(b"SOMEONE!" + bytes(56))
    with pytest.raises(SnapshotError, match="not a placecheck control segment"):
        SnapshotReader(prefix, make_columns).current()


def _verify_every_generation_seen(prefix: str, last_generation: int, result_queue, ready) -> None:
    reader = SnapshotReader(prefix, make_columns)
    seen, torn = set(), []
    ready.release()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        snapshot = reader.current()
        if snapshot is None:
            continue
        if snapshot.generation not in seen:
            seen.add(snapshot.generation)
            wrong = generation_mismatches(snapshot.columns, snapshot.generation)
            if wrong:
                torn.append((snapshot.generation, wrong))
        if snapshot.generation == last_generation:
            break
    result_queue.put((len(seen), max(seen, default=0), torn))


def test_concurrent_readers_never_see_a_torn_snapshot(prefix, writer):
    last_generation = 200
    context = multiprocessing.get_context("spawn")
    results, ready = context.Queue(), context.Semaphore(0)
    readers = [context.Process(target=_verify_every_generation_seen,
                               args=(prefix, last_generation, results, ready))
               for _ in range(2)]
    for reader in readers:
        reader.start()
    # Both readers are following before the bulk of the publishing (spawning is slow under load).
    writer.publish(columns_for_generation(1))
    for _ in readers:
        assert ready.acquire(timeout=60)
    for generation in range(2, last_generation + 1):
        writer.publish(columns_for_generation(generation, rows=20_000))
    outcomes = [results.get(timeout=60) for _ in readers]
    for reader in readers:
        reader.join(timeout=30)

    for seen_count, newest, torn in outcomes:
        assert torn == []
        assert newest == last_generation
        assert seen_count > 10  # the readers really followed the writer along
    assert segments_of(prefix) == [control_name(prefix), segment_name(prefix, last_generation)]


# ------------------------------------------- deltas: a usage change overlaid on a base, never torn

def _delta_expectation(columns, generation: int, base_generation: int) -> list[str]:
    """A base of generation b has every host's num_instances b; each delta generation g on it sets
    row 0 and every row changed since b to g (num_instances and MEMORY_MB used, and row 0's instance
    list to ["g<g>"]). So a generation reads b and g only, g at row 0."""
    counts = columns.arrays["num_instances"]
    wrong = []
    if not set(np.unique(counts).tolist()) <= {generation, base_generation}:
        wrong.append(f"num_instances holds {sorted(set(np.unique(counts).tolist()) - {generation, base_generation})}")
    if counts[0] != generation:
        wrong.append(f"row 0 has {counts[0]}")
    memory = columns.resource_class_index("MEMORY_MB")
    changed = counts == generation
    if base_generation != generation and not (
            (columns.arrays["rc_used"][memory][changed] == generation).all()
            and (columns.arrays["w_free_ram_mb"][changed]
                 == columns.arrays["rc_total"][memory][changed] - generation).all()):
        wrong.append("MEMORY_MB used or w_free_ram_mb of the changed rows")
    if columns.instances_of(0) != [f"g{generation}"] and base_generation != generation:
        wrong.append(f"instances_of(0) is {columns.instances_of(0)}")
    return wrong


def _follow_deltas(prefix: str, last_generation: int, result_queue, ready) -> None:
    """Two threads share one reader (as a worker's do), each holding a generation for a while and
    checking it again afterwards: a private copy of the usage arrays is never reused under it."""
    reader = SnapshotReader(prefix)
    seen, torn = set(), []
    ready.release()

    def follow() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snapshot = reader.current()
            if snapshot is None:
                continue
            seen.add(snapshot.generation)
            for _ in range(2):
                wrong = _delta_expectation(snapshot.columns, snapshot.generation,
                                           snapshot.base_generation or snapshot.generation)
                if wrong:
                    torn.append((snapshot.generation, wrong))
                time.sleep(0.002)
            if snapshot.generation == last_generation:
                return

    threads = [threading.Thread(target=follow) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result_queue.put((len(seen), max(seen, default=0), torn))


def _with_usage(host, generation: int):
    memory = dataclasses.replace(host.resources["MEMORY_MB"], used=generation)
    return dataclasses.replace(host, num_instances=generation, resources={**host.resources, "MEMORY_MB": memory})


def _base_of_generation(fleet, generation: int):
    columns = build_columns(fleet)
    columns.arrays["num_instances"] = np.full(columns.host_count, generation, dtype=np.int32)
    return columns


def test_concurrent_readers_of_deltas_never_see_a_torn_generation(prefix):
    fleet = demo_fleet(3_000, 1)
    last_generation, rebase_every = 239, 60
    context = multiprocessing.get_context("spawn")
    results, ready = context.Queue(), context.Semaphore(0)
    readers = [context.Process(target=_follow_deltas, args=(prefix, last_generation, results, ready))
               for _ in range(2)]
    rng = np.random.default_rng(7)
    with SnapshotWriter(prefix) as writer:
        writer.publish(_base_of_generation(fleet, 1), generation=1)
        for reader in readers:
            reader.start()
        for _ in readers:
            assert ready.acquire(timeout=60)
        delta, changed_rows = None, {0}
        for generation in range(2, last_generation + 1):
            if generation % rebase_every == 0:
                writer.publish(_base_of_generation(fleet, generation), generation=generation)
                delta, changed_rows = None, {0}
                continue
            changed_rows |= set(rng.integers(0, len(fleet.hosts), 5).tolist())
            changed = {row: _with_usage(fleet.hosts[row], generation) for row in changed_rows}
            delta = usage_delta(writer.base.columns, delta, generation, changed, {0: (f"g{generation}",)})
            snapshot = writer.publish_delta(delta, generation=generation)
            assert snapshot.base_generation == generation // rebase_every * rebase_every or 1
            assert not _delta_expectation(snapshot.columns, generation, snapshot.base_generation)
        outcomes = [results.get(timeout=120) for _ in readers]
        for reader in readers:
            reader.join(timeout=30)
        # Only the current generation (a delta) and its base remain.
        assert segments_of(prefix) == sorted([control_name(prefix), segment_name(prefix, last_generation),
                                              segment_name(prefix, writer.base.generation)])
    for seen_count, newest, torn in outcomes:
        assert torn == []
        assert newest == last_generation
        assert seen_count > 10


def test_a_delta_needs_its_base_and_a_layout_that_overlays(prefix, writer):
    with pytest.raises(SnapshotError, match="publishes no deltas"):
        writer.publish_delta(columns_for_generation(1))
    with SnapshotWriter(prefix + "-engine") as engine_writer:
        with pytest.raises(SnapshotError, match="base published first"):
            engine_writer.publish_delta(columns_for_generation(1))


def test_the_writer_checks_the_schema_and_readers_refuse_another_schema(prefix):
    fleet = demo_fleet(20, 1)
    with SnapshotWriter(prefix) as engine_writer:
        misshapen = build_columns(fleet)
        misshapen.arrays["num_instances"] = misshapen.arrays["num_instances"].astype(np.int64)
        with pytest.raises(SchemaError, match="num_instances is int64"):
            engine_writer.publish(misshapen)
        extra = build_columns(fleet)
        extra.arrays["surprise"] = np.zeros(20)
        with pytest.raises(SchemaError, match="undeclared \\['surprise'\\]"):
            engine_writer.publish(extra)
        assert engine_writer.current is None
        engine_writer.publish(build_columns(fleet))
        _corrupt(prefix, 1, 72, b"\x00" * 16)  # the schema hash, after the base generation
        with pytest.raises(SnapshotError, match="column schema 0{32}"):
            SnapshotReader(prefix).current()
