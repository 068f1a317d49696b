"""Columns <-> POSIX shared-memory segments, one immutable segment per generation.

A generation is either a base, the whole fleet's columns, or a delta on a base: a small segment
of what changed since that base (engine.columns.usage_delta), which the writer and every reader
overlay on their mapping of the base (engine.columns.overlay) to make the generation's columns.
The base stays mapped while deltas name it, so a write costs what it changes; a change that is
not a delta (or a delta grown too big) is published as a new base.

Layout of a generation segment, /dev/shm/<prefix>.g<generation>:

    header (128 bytes, little-endian)  see _HEADER: base generation (0: a base), schema hash
    arrays                             each 64-byte aligned, in table-of-contents order
    dicts                              JSON (UTF-8)
    table of contents                  JSON: every array's name, dtype, shape, offset, and the
                                       fleet's epoch and last write time (see Snapshot)

The checksum (CRC32C, hardware-accelerated: a publish and every reader's attach
run it over the whole segment) covers every byte after the header. A segment is written once,
fully, before the control segment names it, and never changes afterwards. The schema hash is the
writer's column declaration (engine.columns.SCHEMA_HASH); a reader refuses another.

The control segment, /dev/shm/<prefix>.ctl, is one 64-byte record naming the
current generation. The writer updates it under a seqlock: the sequence is odd
while the record is being written, and a reader retries until it reads the same
even sequence before and after the record. On x86-64 (TSO) aligned stores are
seen in program order, and each Python-level mmap access is an opaque call the
C compiler cannot reorder, which is what a seqlock needs.

Only the writer creates and unlinks segments. Readers map them read-only with
mmap (not multiprocessing.shared_memory, whose resource tracker unlinks a
segment when an attaching process exits on Python < 3.13). An unlinked
generation's memory is freed once the last reader drops its mapping.
"""
from __future__ import annotations

import fcntl
import json
import mmap
import os
import re
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import crc32c
import numpy as np

SHM_DIR = "/dev/shm"
# 4: base and delta segments, the schema hash; 3: the table of contents names the fleet epoch and
# last write; 2: CRC32C checksum
LAYOUT_VERSION = 4
ALIGNMENT = 64

SEGMENT_MAGIC = b"PLCHKSNP"
# magic, layout version, (padding), generation, published ns, payload length, crc32c,
# (padding), table of contents offset, table of contents length, base generation, schema hash
_HEADER = struct.Struct("<8sI4xQQQI4xQQQ16s")
HEADER_SIZE = 128
SCHEMA_HASH_SIZE = 16

CONTROL_MAGIC = b"PLCHKCTL"
# magic, layout version, state, sequence, generation, published ns
_CONTROL = struct.Struct("<8sIIQQQ")
_SEQUENCE = struct.Struct("<Q")
_SEQUENCE_OFFSET = 16
# The writer packs the fields around the sequence separately: struct.pack_into zeroes its whole
# span before filling it, which would briefly make an odd sequence look even (and the record torn).
_CONTROL_BEFORE_SEQUENCE = struct.Struct("<8sII")
_CONTROL_AFTER_SEQUENCE = struct.Struct("<QQ")
_AFTER_SEQUENCE_OFFSET = _SEQUENCE_OFFSET + _SEQUENCE.size
CONTROL_SIZE = 64
CONTROL_OPEN = 1
CONTROL_CLOSED = 2  # the writer shut down cleanly; a new writer makes a new control segment

# A seqlock write takes microseconds; an odd sequence held longer means the writer died mid-write.
_STUCK_SEQUENCE_S = 1.0
_WAIT_POLL_S = 0.001

assert _HEADER.size <= HEADER_SIZE and _CONTROL.size <= CONTROL_SIZE
assert _CONTROL_BEFORE_SEQUENCE.size == _SEQUENCE_OFFSET
assert _AFTER_SEQUENCE_OFFSET + _CONTROL_AFTER_SEQUENCE.size == _CONTROL.size


class SnapshotError(RuntimeError):
    """A segment that is not ours, of another layout version, damaged, or a prefix already owned."""


class SnapshotDamaged(SnapshotError):
    """The current generation's segment no longer matches its checksum: nothing is decided on it
    until a newer generation arrives."""


@dataclass(frozen=True)
class Snapshot:
    generation: int
    columns: Any  # engine.columns.Columns; arrays are read-only views of the segment
    published_at: float  # unix seconds
    nbytes: int  # size of the segment
    epoch: str = ""  # the fleet history this generation belongs to (engine.store); "" when not kept
    written_at: float = 0.0  # unix seconds of the last write the generation includes; 0: published_at
    base_generation: int = 0  # the base this delta generation overlays; 0: a base itself


ColumnsFactory = Callable[[dict, dict], Any]
Overlay = Callable[[Any, Any], Any]  # (base columns, delta columns) -> the generation's columns


@dataclass(frozen=True)
class ColumnsLayout:
    """How segments become columns: the factory of a segment's columns, how a delta overlays its
    base, the schema hash every segment carries (a reader refuses a segment with another), and the
    writer's check of the arrays it publishes ((arrays, is a delta) -> None, raising if misshapen)."""
    columns_factory: ColumnsFactory
    overlay: Overlay | None = None  # None: this layout publishes no deltas
    schema_hash: bytes = bytes(SCHEMA_HASH_SIZE)
    check: Callable[[dict, bool], None] = lambda arrays, is_delta: None


def engine_layout() -> ColumnsLayout:
    from placecheck_engine import column_schema, columns  # lazily: the snapshot layer stores any Columns

    def check(arrays: dict, is_delta: bool) -> None:
        column_schema.check(arrays, column_schema.DELTA_SCHEMA if is_delta else column_schema.SCHEMA)

    return ColumnsLayout(columns.Columns.from_parts, columns.overlay, column_schema.SCHEMA_HASH, check)


def _layout(layout: ColumnsLayout | ColumnsFactory | None) -> ColumnsLayout:
    if layout is None:
        return engine_layout()
    return layout if isinstance(layout, ColumnsLayout) else ColumnsLayout(layout)


def segment_name(prefix: str, generation: int) -> str:
    return f"{prefix}.g{generation}"


def control_name(prefix: str) -> str:
    return f"{prefix}.ctl"


def _shm_path(name: str) -> str:
    return os.path.join(SHM_DIR, name)


def _align(offset: int) -> int:
    return (offset + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


def _check_prefix(prefix: str) -> None:
    if not prefix or "/" in prefix or prefix.startswith("."):
        raise ValueError(f"snapshot prefix must be a plain file name, got {prefix!r}")


class SnapshotWriter:
    """The one process that publishes generations under a prefix (an exclusive flock enforces it)."""

    def __init__(self, prefix: str, layout: ColumnsLayout | ColumnsFactory | None = None):
        _check_prefix(prefix)
        self.prefix = prefix
        self._layout = _layout(layout)
        self._lock = threading.Lock()
        self._current: Snapshot | None = None
        self._base: Snapshot | None = None  # the base the current generation is or overlays
        self._base_segment: _Segment | None = None  # its mapping and checksum (base_damaged)
        self._control_fd = os.open(_shm_path(control_name(prefix)), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._control_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._control_fd)
            raise SnapshotError(f"another writer owns snapshot prefix {prefix!r}") from None
        self._generation = self._take_over_control()
        self._control = mmap.mmap(self._control_fd, CONTROL_SIZE)
        self._write_control(CONTROL_OPEN, 0, time.time_ns())  # 0: nothing published yet

    def _take_over_control(self) -> int:
        """Continue after a writer that died without closing, so readers never see a number reused."""
        previous_generation = 0
        if os.fstat(self._control_fd).st_size >= CONTROL_SIZE:
            magic, version, state, _, generation, _ = _CONTROL.unpack(os.pread(self._control_fd, _CONTROL.size, 0))
            if magic == CONTROL_MAGIC and version == LAYOUT_VERSION and state == CONTROL_OPEN:
                previous_generation = generation
        else:
            os.ftruncate(self._control_fd, CONTROL_SIZE)
        stale = re.compile(re.escape(self.prefix) + r"\.g\d+")
        for name in os.listdir(SHM_DIR):
            if stale.fullmatch(name):
                _unlink_quietly(name)
        return previous_generation

    def _write_control(self, state: int, generation: int, published_ns: int) -> None:
        sequence = _SEQUENCE.unpack_from(self._control, _SEQUENCE_OFFSET)[0]
        sequence += 1 if sequence % 2 == 0 else 0  # odd: a record is being written
        _SEQUENCE.pack_into(self._control, _SEQUENCE_OFFSET, sequence)
        _CONTROL_BEFORE_SEQUENCE.pack_into(self._control, 0, CONTROL_MAGIC, LAYOUT_VERSION, state)
        _CONTROL_AFTER_SEQUENCE.pack_into(self._control, _AFTER_SEQUENCE_OFFSET, generation, published_ns)
        _SEQUENCE.pack_into(self._control, _SEQUENCE_OFFSET, sequence + 1)

    @property
    def current(self) -> Snapshot | None:
        return self._current

    @property
    def base(self) -> Snapshot | None:
        """The last base published (the current generation, or the base it overlays)."""
        return self._base

    def base_damaged(self) -> bool:
        """Whether the last base's segment was changed after publishing (the state owner's columns
        are that segment's pages: nothing may be derived from them then). ~8 ms at 100,000 hosts."""
        segment = self._base_segment
        return segment is not None and segment.damaged()

    def publish(self, columns, *, generation: int | None = None, epoch: str = "",
                written_ns: int = 0) -> Snapshot:
        """Write `columns` as the next generation, a base (or as `generation`, which must be later
        than the last one: the state owner numbers its durable writes), make it current, unlink the
        previous generation and base."""
        return self._publish(columns, 0, generation, epoch, written_ns)

    def publish_delta(self, delta, *, generation: int | None = None, epoch: str = "",
                      written_ns: int = 0) -> Snapshot:
        """Write `delta` (engine.columns.usage_delta over the last base) as the next generation;
        the base stays, the previous delta generation is unlinked."""
        if self._layout.overlay is None:
            raise SnapshotError("this writer's layout has no overlay: it publishes no deltas")
        if self._base is None:
            raise SnapshotError("a delta needs a base published first")
        return self._publish(delta, self._base.generation, generation, epoch, written_ns)

    def _publish(self, columns, base_generation: int, generation: int | None, epoch: str,
                 written_ns: int) -> Snapshot:
        with self._lock:
            if self._control is None:
                raise SnapshotError(f"snapshot writer for {self.prefix!r} is closed")
            if base_generation and (self._base is None or self._base.generation != base_generation):
                raise SnapshotError(f"base {base_generation} is no longer the current base")
            if generation is None:
                generation = self._generation + 1
            elif generation <= self._generation:
                raise SnapshotError(f"generation {generation} is not after {self._generation}")
            self._layout.check(columns.arrays, bool(base_generation))
            published_ns = time.time_ns()
            name = segment_name(self.prefix, generation)
            size = _write_segment(name, generation, published_ns, base_generation, self._layout.schema_hash,
                           columns.arrays, columns.dicts,
                           {"epoch": epoch, "written_ns": written_ns or published_ns})
            try:
                if base_generation:  # the delta at hand is small: overlay it, not its mapping
                    snapshot = Snapshot(generation, self._layout.overlay(self._base.columns, columns),
                                        published_ns / 1e9, self._base.nbytes + size, epoch,
                                        (written_ns or published_ns) / 1e9, base_generation)
                else:  # a base is big: keep the segment's pages, not a second copy
                    segment = _map(name, generation, self._layout, verify=False)
                    snapshot = segment.snapshot(self._layout, None)
            except BaseException:
                _unlink_quietly(name)
                raise
            self._write_control(CONTROL_OPEN, generation, published_ns)
            previous, previous_base = self._current, self._base
            if previous is not None and previous is not previous_base:
                _unlink_quietly(segment_name(self.prefix, previous.generation))
            if not base_generation:
                if previous_base is not None:
                    _unlink_quietly(segment_name(self.prefix, previous_base.generation))
                self._base, self._base_segment = snapshot, segment
            self._generation = generation
            self._current = snapshot
            return snapshot

    def close(self) -> None:
        """Mark the control record closed and unlink every segment this writer made."""
        with self._lock:
            if self._control is None:
                return
            self._write_control(CONTROL_CLOSED, self._generation, time.time_ns())
            for snapshot in (self._current, self._base):
                if snapshot is not None:
                    _unlink_quietly(segment_name(self.prefix, snapshot.generation))
            _unlink_quietly(control_name(self.prefix))
            self._control.close()
            self._control = None
            os.close(self._control_fd)  # releases the flock

    def __enter__(self) -> "SnapshotWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SnapshotReader:
    """Follows a writer's generations; `current()` is cheap while the generation is unchanged."""

    def __init__(self, prefix: str, layout: ColumnsLayout | ColumnsFactory | None = None):
        _check_prefix(prefix)
        self.prefix = prefix
        self._layout = _layout(layout)
        self._control: mmap.mmap | None = None
        self._snapshot: Snapshot | None = None
        self._base: Snapshot | None = None  # the last base attached: deltas on it reuse its mapping
        self._segments: tuple[_Segment, ...] = ()  # what the current snapshot reads: its base, itself
        self._base_segment: _Segment | None = None
        self._damaged_generation = 0  # a generation found damaged: refused until a newer one

    def current(self) -> Snapshot | None:
        """The current generation, or None while no writer has published one."""
        missing_generation = None
        while True:
            record = self._read_control()
            if record is None:
                return None
            state, generation = record
            if state == CONTROL_CLOSED:
                self._control = None  # the next writer makes a new control segment
                self._snapshot = self._base = None
                return None
            if generation == 0:
                return None
            if self._snapshot is not None and self._snapshot.generation == generation:
                return self._snapshot
            if generation == self._damaged_generation:
                raise SnapshotDamaged(f"{segment_name(self.prefix, generation)} is damaged; waiting for a newer "
                                      f"generation")
            try:
                self._snapshot = self._attach(generation)
            except SnapshotError:
                self._damaged_generation, self._snapshot = generation, None
                raise
            except FileNotFoundError:
                # The writer unlinks a generation (or a base) only after naming a newer one, so
                # the control record must have moved on; if it has not, the segment was removed.
                if generation == missing_generation:
                    raise SnapshotError(f"{segment_name(self.prefix, generation)} named by the "
                                        f"control record is missing") from None
                missing_generation = generation
                continue
            return self._snapshot

    def _attach(self, generation: int) -> Snapshot:
        segment = _map(segment_name(self.prefix, generation), generation, self._layout, verify=True)
        base, base_segment = self._base, self._base_segment
        if segment.base_generation and (base is None or base.generation != segment.base_generation):
            base_segment = _map(segment_name(self.prefix, segment.base_generation), segment.base_generation,
                                self._layout, verify=True)
            base = base_segment.snapshot(self._layout, None)
        snapshot = segment.snapshot(self._layout, base)
        if segment.base_generation:
            self._base, self._base_segment, self._segments = base, base_segment, (base_segment, segment)
        else:
            self._base, self._base_segment, self._segments = snapshot, segment, (segment,)
        return snapshot

    def verify(self) -> None:
        """Checksum the current generation's segments again (a base of 100,000 hosts: ~10 ms);
        SnapshotDamaged if they changed since they were attached. Segments are never written
        after publishing, so a change is damage: from then on the generation is refused."""
        snapshot, segments = self._snapshot, self._segments
        if snapshot is not None and any(segment.damaged() for segment in segments):
            self._damaged_generation, self._snapshot = snapshot.generation, None
            self._base = self._base_segment = None
            raise SnapshotDamaged(f"{segment_name(self.prefix, snapshot.generation)} changed after it was "
                                  f"published; waiting for a newer generation")

    def wait_for(self, generation: int, timeout_s: float) -> Snapshot | None:
        """The first snapshot at `generation` or later, or None when none appears within the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            snapshot = self.current()
            if snapshot is not None and snapshot.generation >= generation:
                return snapshot
            if time.monotonic() >= deadline:
                return None
            time.sleep(_WAIT_POLL_S)

    def _read_control(self) -> tuple[int, int] | None:
        """(state, generation) read consistently under the seqlock; None when there is no control yet."""
        if self._control is None:
            self._control = _open_control(self.prefix)
            if self._control is None:
                return None
        control = self._control
        stuck_since = None
        while True:
            before = _SEQUENCE.unpack_from(control, _SEQUENCE_OFFSET)[0]
            magic, version, state, _, generation, _ = _CONTROL.unpack_from(control, 0)
            after = _SEQUENCE.unpack_from(control, _SEQUENCE_OFFSET)[0]
            if before == after and before % 2 == 0:
                break
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since > _STUCK_SEQUENCE_S:
                raise SnapshotError(f"control record of {self.prefix!r} stuck mid-update")
            time.sleep(0)
        if magic == b"\0" * 8:
            return None  # a writer has created the control segment but not written it yet
        if magic != CONTROL_MAGIC:
            raise SnapshotError(f"{control_name(self.prefix)} is not a placecheck control segment")
        if version != LAYOUT_VERSION:
            raise SnapshotError(f"{control_name(self.prefix)} has layout version {version}, "
                                f"this reader understands {LAYOUT_VERSION}")
        return state, generation


def _open_control(prefix: str) -> mmap.mmap | None:
    try:
        fd = os.open(_shm_path(control_name(prefix)), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size < CONTROL_SIZE:
            return None
        return mmap.mmap(fd, CONTROL_SIZE, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def _unlink_quietly(name: str) -> None:
    try:
        os.unlink(_shm_path(name))
    except FileNotFoundError:
        pass


def _write_segment(name: str, generation: int, published_ns: int, base_generation: int, schema_hash: bytes,
                   arrays: dict, dicts: dict, fleet_meta: dict) -> int:
    entries, offset = [], HEADER_SIZE
    for array_name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype.hasobject:
            raise TypeError(f"array {array_name!r} holds Python objects; only fixed-width arrays can be shared")
        offset = _align(offset)
        entries.append((array_name, array, offset))
        offset += array.nbytes
    dicts_json = json.dumps(dicts, separators=(",", ":")).encode()
    dicts_offset = offset
    toc_json = json.dumps({
        "arrays": [{"name": array_name, "dtype": np.lib.format.dtype_to_descr(array.dtype),
                    "shape": list(array.shape), "offset": array_offset}
                   for array_name, array, array_offset in entries],
        "dicts": [dicts_offset, len(dicts_json)],
        "fleet": fleet_meta,
    }, separators=(",", ":")).encode()
    toc_offset = dicts_offset + len(dicts_json)
    size = toc_offset + len(toc_json)

    fd = os.open(_shm_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        # MAP_POPULATE allocates every page in one go instead of one fault per page.
        with mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE) as segment:
            for _, array, array_offset in entries:
                np.ndarray(array.shape, array.dtype, buffer=segment, offset=array_offset)[...] = array
            segment[dicts_offset:toc_offset] = dicts_json
            segment[toc_offset:size] = toc_json
            with memoryview(segment) as view:
                checksum = crc32c.crc32c(view[HEADER_SIZE:])
            _HEADER.pack_into(segment, 0, SEGMENT_MAGIC, LAYOUT_VERSION, generation, published_ns,
                              size - HEADER_SIZE, checksum, toc_offset, len(toc_json), base_generation,
                              schema_hash)
    except BaseException:
        _unlink_quietly(name)
        raise
    finally:
        os.close(fd)
    return size


@dataclass(frozen=True)
class _Segment:
    """One mapped, checked generation segment."""
    generation: int
    base_generation: int
    published_ns: int
    nbytes: int
    arrays: dict
    dicts: dict
    epoch: str
    written_ns: int
    mapping: mmap.mmap  # the segment itself, to verify its checksum again
    checksum: int

    def damaged(self) -> bool:
        with memoryview(self.mapping) as view:
            return crc32c.crc32c(view[HEADER_SIZE:]) != self.checksum

    def snapshot(self, layout: ColumnsLayout, base: Snapshot | None) -> Snapshot:
        """This generation's snapshot: its own columns, or for a delta, overlaid on `base`."""
        columns, nbytes = layout.columns_factory(self.arrays, self.dicts), self.nbytes
        if self.base_generation:
            if base is None or base.generation != self.base_generation or layout.overlay is None:
                raise SnapshotError(f"generation {self.generation} overlays base {self.base_generation}, "
                                    f"which is not at hand")
            columns, nbytes = layout.overlay(base.columns, columns), base.nbytes + nbytes
        return Snapshot(generation=self.generation, columns=columns, published_at=self.published_ns / 1e9,
                        nbytes=nbytes, epoch=self.epoch,
                        written_at=self.written_ns / 1e9, base_generation=self.base_generation)


def _map(name: str, generation: int, layout: ColumnsLayout, verify: bool) -> _Segment:
    """Map a generation read-only with its arrays as zero-copy views (FileNotFoundError if gone)."""
    fd = os.open(_shm_path(name), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size < HEADER_SIZE:
            raise SnapshotError(f"{name} is too short to be a snapshot segment ({size} bytes)")
        segment = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)
    magic, version = _HEADER.unpack_from(segment, 0)[:2]
    if magic != SEGMENT_MAGIC:
        raise SnapshotError(f"{name} is not a placecheck snapshot segment")
    if version != LAYOUT_VERSION:
        raise SnapshotError(f"{name} has layout version {version}, this reader understands {LAYOUT_VERSION}")
    (_, _, header_generation, published_ns, payload_length, checksum, toc_offset, toc_length,
     base_generation, schema_hash) = _HEADER.unpack_from(segment, 0)
    if header_generation != generation or HEADER_SIZE + payload_length != size:
        raise SnapshotError(f"{name} header does not match its name or size")
    if schema_hash != layout.schema_hash:
        raise SnapshotError(f"{name} has column schema {schema_hash.hex()}, this reader's is "
                            f"{layout.schema_hash.hex()} (engine.columns.SCHEMA)")
    if verify:
        with memoryview(segment) as view:
            actual = crc32c.crc32c(view[HEADER_SIZE:])
        if actual != checksum:
            raise SnapshotError(f"{name} is damaged: checksum {actual:#010x}, header says {checksum:#010x}")
    try:
        toc = json.loads(segment[toc_offset:toc_offset + toc_length])
        arrays = {}
        for entry in toc["arrays"]:
            array = np.ndarray(tuple(entry["shape"]), np.lib.format.descr_to_dtype(entry["dtype"]),
                               buffer=segment, offset=entry["offset"])
            arrays[entry["name"]] = array
        dicts_offset, dicts_length = toc["dicts"]
        dicts = json.loads(segment[dicts_offset:dicts_offset + dicts_length])
        epoch, written_ns = toc["fleet"]["epoch"], toc["fleet"]["written_ns"]
    except (ValueError, KeyError, TypeError) as error:
        raise SnapshotError(f"{name} has an unreadable table of contents: {error}") from error
    return _Segment(generation, base_generation, published_ns, size, arrays, dicts, epoch, written_ns, segment,
                    checksum)
