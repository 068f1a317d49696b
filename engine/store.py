"""The fleet's durable home: one SQLite database (WAL, synchronous=FULL) in the state directory.

Every FleetState change is committed here before it is acknowledged. One writer thread does
all the committing: the changes that queued while the previous commit was in flight go into
the next transaction together (group commit), so concurrent writers share one fsync, and
each caller waits for its own change's commit.

Tables: `meta` (format, epoch, generation, time of the last write), `hosts` and `aggregates`
(one row each in the fleet file's JSON shape, with a position that keeps fleet order). Rows
are read back without the fleet file's checks: only validated hosts and aggregates are written
(and the file's own rules, such as aggregates naming only known hosts, are not the state API's). The
epoch is a random id made when a history starts (a new store); it never changes afterwards,
so a generation number and its epoch together name one state of one history.
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

from engine.fleetfile import aggregate_to_json, host_to_json
from engine.model import Aggregate, Fleet, Host, Inventory

log = logging.getLogger(__name__)

STORE_FILE = "fleet.sqlite3"
STORE_FORMAT = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hosts (name TEXT PRIMARY KEY, position INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS aggregates (id INTEGER PRIMARY KEY, position INTEGER NOT NULL, body TEXT NOT NULL);
"""


class StoreError(Exception):
    """The store cannot take a change; nothing of the change is kept."""


class StoreDamaged(StoreError):
    """The store file is not a readable placecheck store: refused rather than started empty."""


class StoreFull(StoreError):
    """The disk (or quota) is full."""


@dataclass(frozen=True)
class Recovered:
    fleet: Fleet
    generation: int  # 0: the history has no write yet
    epoch: str
    written_ns: int  # unix ns of the last write; 0 when none


@dataclass
class Change:
    """One write as the store sees it; `payload` is the caller's, handed back on commit."""
    generation: int
    written_ns: int
    replace: bool = False  # every host and aggregate goes first
    hosts: list[Host] = field(default_factory=list)  # added or replaced
    removed_hosts: list[str] = field(default_factory=list)
    aggregates: list[Aggregate] = field(default_factory=list)  # added or replaced
    removed_aggregates: list[int] = field(default_factory=list)
    payload: object = None


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


def _host_from_row(document: dict) -> Host:
    """The inverse of host_to_json for a host that was validated before it was stored."""
    return Host(**{
        **document,
        "resources": {name: Inventory(**inventory) for name, inventory in document["resources"].items()},
        "traits": frozenset(document["traits"]),
        "supported_instances": tuple(map(tuple, document["supported_instances"])),
        "instances": tuple(document["instances"]),
    })


def _aggregate_from_row(document: dict) -> Aggregate:
    return Aggregate(**{**document, "hosts": frozenset(document["hosts"])})


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

    def _open(self, created: bool) -> Recovered:
        connection = self._connection
        if connection.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
            raise sqlite3.DatabaseError("cannot use write-ahead logging")
        connection.execute("PRAGMA synchronous=FULL")
        check = connection.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not created and tables and not {"meta", "hosts", "aggregates"} <= tables:
            raise sqlite3.DatabaseError(f"tables {sorted(tables)} are not a placecheck store's")
        connection.executescript(_SCHEMA)
        meta = dict(connection.execute("SELECT key, value FROM meta"))
        if not meta:
            meta = {"format": str(STORE_FORMAT), "epoch": secrets.token_hex(8), "generation": "0",
                    "written_ns": "0"}
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            connection.execute("COMMIT")
            log.info("new fleet history %s in %s", meta["epoch"], self.path)
        if meta.get("format") != str(STORE_FORMAT):
            raise sqlite3.DatabaseError(f"store format {meta.get('format')}, this version reads {STORE_FORMAT}")
        try:
            hosts = tuple(_host_from_row(json.loads(body)) for body, in
                          connection.execute("SELECT body FROM hosts ORDER BY position"))
            aggregates = tuple(_aggregate_from_row(json.loads(body)) for body, in
                               connection.execute("SELECT body FROM aggregates ORDER BY position"))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise sqlite3.DatabaseError(f"unreadable row: {error!r}") from None
        self._next_position = 1 + max(
            connection.execute("SELECT coalesce(max(position), -1) FROM hosts").fetchone()[0],
            connection.execute("SELECT coalesce(max(position), -1) FROM aggregates").fetchone()[0])
        return Recovered(Fleet(hosts=hosts, aggregates=aggregates), int(meta["generation"]), meta["epoch"],
                         int(meta["written_ns"]))

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
            try:
                self._commit([change for change, _ in batch])
            except sqlite3.Error as error:
                failure = self._failure(error)
                log.error("cannot commit %d change(s) to %s: %s", len(batch), self.path, failure)
                self.on_failure(failure)
                for _, ticket in batch:
                    ticket.settle(failure)
                continue
            self.on_commit(batch[-1][0])
            for _, ticket in batch:
                ticket.settle(None)

    def _failure(self, error: sqlite3.Error) -> StoreError:
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
        if change.replace:
            connection.execute("DELETE FROM hosts")
            connection.execute("DELETE FROM aggregates")
        connection.executemany("DELETE FROM hosts WHERE name = ?", [(name,) for name in change.removed_hosts])
        connection.executemany("DELETE FROM aggregates WHERE id = ?", [(id_,) for id_ in change.removed_aggregates])
        # A replaced row keeps its position (its place in fleet order); a new one goes last.
        connection.executemany(
            "INSERT INTO hosts VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET body = excluded.body",
            [(host.name, self._take_position(), _json(host_to_json(host))) for host in change.hosts])
        connection.executemany(
            "INSERT INTO aggregates VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET body = excluded.body",
            [(aggregate.id, self._take_position(), _json(aggregate_to_json(aggregate)))
             for aggregate in change.aggregates])

    def _take_position(self) -> int:
        self._next_position += 1
        return self._next_position
