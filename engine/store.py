"""The fleet's durable home: one SQLite database (WAL, synchronous=FULL) in the state directory.

Every FleetState change is committed here before it is acknowledged. One writer thread does
all the committing: the changes that queued while the previous commit was in flight go into
the next transaction together (group commit), so concurrent writers share one fsync, and
each caller waits for its own change's commit.

The fleet is kept as a checkpoint and a log, so a write costs what it changes and a restart
reads the fleet back without rebuilding it host by host:
- `checkpoint`: the columns (engine.columns) of the fleet as of one generation, each array in
  parts of at most CHECKPOINT_PART_BYTES with a CRC32C of each part, and the columns' dicts as JSON;
- `log`: one row per later change to hosts (hosts added or replaced, in the fleet file's JSON
  shape; hosts removed; usage updates), in generation order;
- `aggregates`: every aggregate, one row each in the fleet file's JSON shape (they are few, and
  may name hosts not in the fleet yet, which the columns cannot hold);
- `meta`: format, epoch, generation, time of the last write, the checkpoint's generation.
A change may carry new columns (`Change.checkpoint`): they replace the checkpoint and the log
rows up to their generation go. The state owner sends them once the log outweighs a share of the
checkpoint (`wants_checkpoint`), so replaying the log at a restart stays short.

Rows are read back without the fleet file's checks: only validated hosts and aggregates are
written. The epoch is a random id made when a history starts (a new store); it never changes
afterwards, so a generation number and its epoch together name one state of one history.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass, field
from typing import Callable

import crc32c
import numpy as np

from placecheck_engine.column_schema import SchemaError, check
from placecheck_engine.fleetfile import aggregate_to_json, host_to_json
from placecheck_engine.model import Aggregate

log = logging.getLogger(__name__)

STORE_FILE = "fleet.sqlite3"
STORE_FORMAT = 3  # 1 kept one JSON row per host; 2's checkpoint had no NUMA or PCI columns
CHECKPOINT_PART_BYTES = 64 << 20  # below SQLite's 1 GB limit on one value, whatever the fleet
DICTS_PART = "#dicts"  # the checkpoint row holding the columns' dicts
# A new checkpoint once the log outweighs this share of the last one (and this many bytes): a
# restart replays at most about that much, and a write pays a checkpoint's cost at most once per
# that many bytes written.
CHECKPOINT_LOG_SHARE = 4
CHECKPOINT_LOG_MIN_BYTES = 4 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (name TEXT NOT NULL, part INTEGER NOT NULL, dtype TEXT NOT NULL,
    shape TEXT NOT NULL, crc INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (name, part));
CREATE TABLE IF NOT EXISTS log (generation INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS aggregates (id INTEGER PRIMARY KEY, position INTEGER NOT NULL, body TEXT NOT NULL);
"""
_TABLES = {"meta", "checkpoint", "log", "aggregates"}


class StoreError(Exception):
    """The store cannot take a change; nothing of the change is kept."""


class StoreDamaged(StoreError):
    """The store file is not a readable placecheck store: refused rather than started empty."""


class StoreFull(StoreError):
    """The disk (or quota) is full."""


@dataclass(frozen=True)
class Recovered:
    """What the store held: replay `log` on `checkpoint` (engine.state does) for the fleet as of `generation`."""
    checkpoint: tuple[dict[str, np.ndarray], dict] | None  # columns' arrays and dicts; None: no hosts yet
    log: tuple[dict, ...]  # the changes to hosts after the checkpoint, oldest first (see Change.log_entry)
    aggregates: tuple[Aggregate, ...]
    generation: int  # 0: the history has no write yet
    epoch: str
    written_ns: int  # unix ns of the last write; 0 when none


@dataclass
class Change:
    """One write as the store sees it; `payload` is the caller's, handed back on commit."""
    generation: int
    written_ns: int
    replace_aggregates: bool = False  # every aggregate goes first
    hosts: list = field(default_factory=list)  # engine.model.Host, added or replaced
    removed_hosts: list[str] = field(default_factory=list)
    usages: list[dict] = field(default_factory=list)  # HostUsage in JSON (engine.state.usage_to_json)
    aggregates: list[Aggregate] = field(default_factory=list)  # added or replaced
    removed_aggregates: list[int] = field(default_factory=list)
    checkpoint: object = None  # engine.columns.Columns of the fleet as of this change, to keep instead of the log
    payload: object = None

    def log_entry(self) -> dict:
        entry = {"hosts": [host_to_json(host) for host in self.hosts], "removed_hosts": self.removed_hosts,
                 "usages": self.usages}
        return {key: value for key, value in entry.items() if value}


class Ticket:
    """A queued change's commit; `wait()` returns once it is durable or raises why it is not."""

    def __init__(self):
        self._done = threading.Event()
        self._error: BaseException | None = None

    def settle(self, error: BaseException | None) -> None:
        self._error = error
        self._done.set()

    def wait(self) -> None:
        self._done.wait()
        if self._error is not None:
            raise self._error


def _json(document) -> str:
    return json.dumps(document, separators=(",", ":"))


def _aggregate_from_row(document: dict) -> Aggregate:
    return Aggregate(**{**document, "hosts": frozenset(document["hosts"])})


def _read(connection: sqlite3.Connection) -> Recovered:
    """The store's contents (sqlite3.DatabaseError when a row or the checkpoint cannot be read)."""
    meta = dict(connection.execute("SELECT key, value FROM meta"))
    checkpoint = _read_checkpoint(connection)
    try:
        log_bodies = tuple(json.loads(body) for body, in
                           connection.execute("SELECT body FROM log ORDER BY generation"))
        aggregates = tuple(_aggregate_from_row(json.loads(body)) for body, in
                           connection.execute("SELECT body FROM aggregates ORDER BY position"))
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise sqlite3.DatabaseError(f"unreadable row: {error!r}") from None
    return Recovered(checkpoint, log_bodies, aggregates, int(meta["generation"]), meta["epoch"],
                     int(meta["written_ns"]))


def _read_checkpoint(connection: sqlite3.Connection) -> tuple[dict[str, np.ndarray], dict] | None:
    parts: dict[str, list] = {}
    for name, part, dtype, shape, crc, data in connection.execute(
            "SELECT name, part, dtype, shape, crc, data FROM checkpoint ORDER BY name, part"):
        if crc32c.crc32c(data) != crc:
            raise sqlite3.DatabaseError(f"checkpoint {name} part {part} fails its checksum")
        parts.setdefault(name, [dtype, shape]).append(data)
    if not parts:
        return None
    try:
        dicts = json.loads(b"".join(parts.pop(DICTS_PART)[2:]))
        arrays = {name: np.frombuffer(b"".join(data), dtype=dtype).reshape(json.loads(shape))
                  for name, (dtype, shape, *data) in parts.items()}
        check(arrays)
    except (KeyError, ValueError, TypeError, SchemaError) as error:
        raise sqlite3.DatabaseError(f"unreadable checkpoint: {error}") from None
    return arrays, dicts


class FleetStore:
    """Open (or create) the store in `directory`; `recovered` is what it held."""

    def __init__(self, directory: str, commit_thread_setup: Callable[[], None] = lambda: None):
        """commit_thread_setup runs first thing on the commit thread (the server lowers its priority)."""
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, STORE_FILE)
        created = not os.path.exists(self.path)
        try:
            # isolation_level=None: transactions are begun and committed explicitly below.
            self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.recovered = self._open(created)
        except sqlite3.DatabaseError as error:
            raise StoreDamaged(f"{self.path} is damaged or not a placecheck store ({error}); "
                               f"move it aside to start an empty history") from None
        self._queue: list[tuple[Change, Ticket]] = []
        self._wakeup = threading.Condition()
        self._closing = False
        self.on_commit: Callable[[Change], None] = lambda change: None
        self.on_failure: Callable[[StoreError], None] = lambda error: None
        self._thread = threading.Thread(target=self._commit_loop, args=(commit_thread_setup,), name="store-commit",
                                        daemon=True)
        self._thread.start()

    def wants_checkpoint(self) -> bool:
        """Whether the log has outgrown its share of the checkpoint (read outside the commit thread: an estimate)."""
        return self._log_bytes > max(CHECKPOINT_LOG_MIN_BYTES, self._checkpoint_bytes // CHECKPOINT_LOG_SHARE)

    def _open(self, created: bool) -> Recovered:
        connection = self._connection
        if connection.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            raise sqlite3.DatabaseError("cannot use write-ahead logging")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA journal_size_limit={CHECKPOINT_PART_BYTES}")  # a checkpoint's WAL is given back
        check_result = connection.execute("PRAGMA quick_check").fetchone()[0]
        if check_result != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check_result}")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        meta = dict(connection.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        if meta.get("format", str(STORE_FORMAT)) != str(STORE_FORMAT):
            raise sqlite3.DatabaseError(f"store format {meta.get('format')}, this version reads {STORE_FORMAT}")
        if not created and tables and not _TABLES <= tables:
            raise sqlite3.DatabaseError(f"tables {sorted(tables)} are not a placecheck store's")
        connection.executescript(_SCHEMA)
        if not meta:
            meta = {"format": str(STORE_FORMAT), "epoch": secrets.token_hex(8), "generation": "0",
                    "written_ns": "0", "checkpoint_generation": "0"}
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            connection.execute("COMMIT")
            log.info("new fleet history %s in %s", meta["epoch"], self.path)
        self._checkpoint_bytes = connection.execute(
            "SELECT coalesce(sum(length(data)), 0) FROM checkpoint").fetchone()[0]
        self._log_bytes = connection.execute("SELECT coalesce(sum(length(body)), 0) FROM log").fetchone()[0]
        self._next_position = 1 + connection.execute(
            "SELECT coalesce(max(position), -1) FROM aggregates").fetchone()[0]
        return _read(connection)

    def durable(self) -> Recovered:
        """What the store holds as of its last commit, read again on a connection of its own (the
        state owner restores its fleet from it when the published copy was damaged)."""
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("BEGIN")  # one snapshot of the database for every table read
            return _read(connection)
        except sqlite3.DatabaseError as error:
            raise StoreDamaged(f"{self.path} cannot be read back: {error}") from None
        finally:
            connection.close()

    def submit(self, change: Change) -> Ticket:
        """Queue a change for the next commit (changes commit in the order they are submitted)."""
        ticket = Ticket()
        with self._wakeup:
            if self._closing:
                raise StoreError(f"{self.path} is closed")
            self._queue.append((change, ticket))
            self._wakeup.notify()
        return ticket

    def fail_queued(self, error: StoreError) -> None:
        """Fail every change still queued (on_failure calls it: they were made on top of a failed one)."""
        with self._wakeup:
            queued, self._queue = self._queue, []
        for _, ticket in queued:
            ticket.settle(error)

    def close(self) -> None:
        """Commit what is queued, then stop."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join()
        self._connection.close()

    def _commit_loop(self, setup: Callable[[], None]) -> None:
        setup()
        while True:
            with self._wakeup:
                while not self._queue and not self._closing:
                    self._wakeup.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            self._commit_batch(batch)
            # Nothing of the batch is kept until the next one: a change may hold a whole fleet's checkpoint.
            del batch

    def _commit_batch(self, batch: list[tuple[Change, Ticket]]) -> None:
        sizes = self._checkpoint_bytes, self._log_bytes
        try:
            self._commit([change for change, _ in batch])
        except Exception as error:  # a failure fails the batch, never the commit thread
            if not isinstance(error, sqlite3.Error):
                log.exception("unexpected failure committing to %s", self.path)
            self._checkpoint_bytes, self._log_bytes = sizes
            failure = self._failure(error)
            log.error("cannot commit %d change(s) to %s: %s", len(batch), self.path, failure)
            self.on_failure(failure)
            settled_with = failure
        else:
            self.on_commit(batch[-1][0])
            settled_with = None
        for _, ticket in batch:
            ticket.settle(settled_with)

    def _failure(self, error: Exception) -> StoreError:
        if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return StoreFull(f"{self.path}: the disk is full; the change was not kept")
        return StoreError(f"{self.path}: {error}; the change was not kept")

    def _commit(self, changes: list[Change]) -> None:
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            for change in changes:
                self._apply(change)
            last = changes[-1]
            connection.executemany("UPDATE meta SET value = ? WHERE key = ?",
                                   [(str(last.generation), "generation"), (str(last.written_ns), "written_ns")])
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise

    def _apply(self, change: Change) -> None:
        connection = self._connection
        if change.checkpoint is not None:
            self._write_checkpoint(change.checkpoint, change.generation)
        else:
            entry = change.log_entry()
            if entry:
                body = _json(entry)
                connection.execute("INSERT INTO log VALUES (?, ?)", (change.generation, body))
                self._log_bytes += len(body)
        if change.replace_aggregates:
            connection.execute("DELETE FROM aggregates")
        connection.executemany("DELETE FROM aggregates WHERE id = ?", [(id_,) for id_ in change.removed_aggregates])
        # A replaced row keeps its position (its place in fleet order); a new one goes last.
        connection.executemany(
            "INSERT INTO aggregates VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET body = excluded.body",
            [(aggregate.id, self._take_position(), _json(aggregate_to_json(aggregate)))
             for aggregate in change.aggregates])

    def _write_checkpoint(self, columns, generation: int) -> None:
        connection = self._connection
        connection.execute("DELETE FROM checkpoint")
        connection.execute("DELETE FROM log WHERE generation <= ?", (generation,))
        rows = [(DICTS_PART, "json", "[]", json.dumps(columns.dicts).encode())]
        rows += [(name, array.dtype.str, json.dumps(array.shape), memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
                 for name, array in columns.arrays.items()]
        written = 0
        for name, dtype, shape, data in rows:
            for part, start in enumerate(range(0, max(len(data), 1), CHECKPOINT_PART_BYTES)):
                piece = data[start:start + CHECKPOINT_PART_BYTES]
                connection.execute("INSERT INTO checkpoint VALUES (?, ?, ?, ?, ?, ?)",
                                   (name, part, dtype, shape, crc32c.crc32c(piece), piece))
                written += len(piece)
        connection.execute("UPDATE meta SET value = ? WHERE key = 'checkpoint_generation'", (str(generation),))
        self._checkpoint_bytes = written
        self._log_bytes = connection.execute("SELECT coalesce(sum(length(body)), 0) FROM log").fetchone()[0]

    def _take_position(self) -> int:
        self._next_position += 1
        return self._next_position
