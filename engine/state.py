"""The state owner's fleet: every change is validated, committed to the store, then published.

A change is computed on copies of the host and aggregate tables, with its columns built, while
changes are serialised; it is then committed to the store (engine.store, group commit) and, once
durable, published as its generation before the caller hears of it. A refused change touches
nothing; a change the store cannot keep is undone, with every change queued on top of it.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from engine.fleetfile import validate_aggregates, validate_fleet, validate_hosts
from engine.model import MAX_USED, Aggregate, Fleet, Host, InvalidField
from engine.snapshot import SnapshotWriter
from engine.store import Change, FleetStore, StoreError, Ticket


@dataclass(frozen=True)
class HostUsage:
    """What changes as instances come and go; None leaves the host's value as it is."""
    name: str
    used: dict[str, int] = field(default_factory=dict)  # replaces these classes' `used`; others keep theirs
    num_instances: int | None = None
    num_io_ops: int | None = None
    instances: tuple[str, ...] | None = None


@dataclass(frozen=True)
class FleetStatus:
    generation: int  # of the published snapshot; 0 while the history has no write
    epoch: str  # the history's id (engine.store)
    host_count: int
    aggregate_count: int
    age_seconds: float  # since the last write the snapshot includes
    snapshot_bytes: int


BuildColumns = Callable[[Fleet], object]
# (previous columns, the new fleet's hosts in row order, rows whose usage changed, whether any
# instance list changed) -> the new fleet's columns; see engine.columns.columns_with_usage.
ColumnsWithUsage = Callable[[object, tuple[Host, ...], list[int], bool], object]


@dataclass
class _Version:
    """One state of the fleet, as of one generation."""
    generation: int
    hosts: dict[str, Host]
    aggregates: dict[int, Aggregate]
    # Built for this generation; None once published (the segment holds them: one copy, not two)
    # or while the history has no write.
    columns: object
    written_ns: int

    def fleet(self) -> Fleet:
        return Fleet(hosts=tuple(self.hosts.values()), aggregates=tuple(self.aggregates.values()))


def _unknown(kind: str, missing: list) -> KeyError:
    return KeyError(f"unknown {kind}: {', '.join(map(str, missing))}")


class FleetState:
    """Hosts by name in fleet order and aggregates by id, kept in `store`; thread-safe.

    Starts from what the store recovered, published at once under its own generation."""

    def __init__(self, writer: SnapshotWriter, store: FleetStore, build_columns: BuildColumns | None = None,
                 columns_with_usage: ColumnsWithUsage | None = None):
        """build_columns defaults to engine.columns' builder, with its usage patcher; any other
        builder rebuilds on usage updates too unless given its own `columns_with_usage`."""
        if build_columns is None:
            from engine import columns  # lazily, so the state owner can be tested with any builder
            build_columns, columns_with_usage = columns.build_columns, columns.columns_with_usage
        self._writer = writer
        self._store = store
        self.epoch = store.recovered.epoch
        self._build_columns = build_columns
        self._columns_with_usage = columns_with_usage
        self._lock = threading.Lock()  # serialises changes up to their submission to the store
        self._publish_lock = threading.Lock()
        recovered = store.recovered
        hosts = {host.name: host for host in recovered.fleet.hosts}
        aggregates = {aggregate.id: aggregate for aggregate in recovered.fleet.aggregates}
        columns = build_columns(recovered.fleet) if recovered.generation else None
        # _latest: the last change made (maybe not yet durable); _committed: the last durable one.
        self._latest = self._committed = _Version(recovered.generation, hosts, aggregates, columns,
                                                  recovered.written_ns)
        store.on_commit = self._on_commit
        store.on_failure = self._on_failure
        if recovered.generation:
            self._publish(self._committed)

    def fleet(self) -> Fleet:
        """The last acknowledged fleet."""
        return self._committed.fleet()

    def replace(self, fleet: Fleet, allow_empty: bool = False, hosts_field: str = "fleet.hosts") -> int:
        """Replace the whole fleet; one without hosts only with allow_empty (else InvalidField
        naming `hosts_field`, the caller's name for the hosts)."""
        validate_fleet(fleet)
        if not fleet.hosts and not allow_empty:
            raise InvalidField(hosts_field, "a fleet without hosts would remove every host; "
                                            "set allow_empty to mean it")
        with self._lock:
            ticket, version = self._make(
                {host.name: host for host in fleet.hosts},
                {aggregate.id: aggregate for aggregate in fleet.aggregates}, self._build_columns,
                Change(0, 0, replace=True, hosts=list(fleet.hosts), aggregates=list(fleet.aggregates)))
        return self._acknowledge(ticket, version)

    def upsert_hosts(self, hosts: Iterable[Host]) -> int:
        """Add or replace hosts by name; a replaced host keeps its place in fleet order."""
        hosts = list(hosts)
        validate_hosts(hosts)
        with self._lock:
            new_hosts = dict(self._latest.hosts)
            new_hosts.update((host.name, host) for host in hosts)
            ticket, version = self._make(new_hosts, self._latest.aggregates, self._build_columns,
                                         Change(0, 0, hosts=hosts))
        return self._acknowledge(ticket, version)

    def remove_hosts(self, names: Iterable[str]) -> int:
        """Remove hosts by name, and from every aggregate they belong to."""
        doomed = set(names)
        with self._lock:
            latest = self._latest
            missing = sorted(doomed - latest.hosts.keys())
            if missing:
                raise _unknown("host", missing)
            new_hosts = {name: host for name, host in latest.hosts.items() if name not in doomed}
            left = [dataclasses.replace(aggregate, hosts=aggregate.hosts - doomed)
                    for aggregate in latest.aggregates.values() if aggregate.hosts & doomed]
            new_aggregates = {**latest.aggregates, **{aggregate.id: aggregate for aggregate in left}}
            ticket, version = self._make(new_hosts, new_aggregates, self._build_columns,
                                         Change(0, 0, removed_hosts=sorted(doomed), aggregates=left))
        return self._acknowledge(ticket, version)

    def upsert_aggregates(self, aggregates: Iterable[Aggregate]) -> int:
        """Add or replace aggregates by id; a member named before its host arrives joins when it does."""
        aggregates = list(aggregates)
        validate_aggregates(aggregates)
        with self._lock:
            new_aggregates = dict(self._latest.aggregates)
            new_aggregates.update((aggregate.id, aggregate) for aggregate in aggregates)
            ticket, version = self._make(self._latest.hosts, new_aggregates, self._build_columns,
                                         Change(0, 0, aggregates=aggregates))
        return self._acknowledge(ticket, version)

    def remove_aggregates(self, ids: Iterable[int]) -> int:
        doomed = set(ids)
        with self._lock:
            latest = self._latest
            missing = sorted(doomed - latest.aggregates.keys())
            if missing:
                raise _unknown("aggregate id", missing)
            new_aggregates = {aggregate_id: aggregate for aggregate_id, aggregate in latest.aggregates.items()
                              if aggregate_id not in doomed}
            ticket, version = self._make(latest.hosts, new_aggregates, self._build_columns,
                                         Change(0, 0, removed_aggregates=sorted(doomed)))
        return self._acknowledge(ticket, version)

    def update_usage(self, usages: Iterable[HostUsage]) -> int:
        """Replace hosts' usage; later entries for the same host apply on top of earlier ones."""
        usages = list(usages)
        with self._lock:
            latest = self._latest
            changed: dict[str, Host] = {}
            for index, usage in enumerate(usages):
                host = changed.get(usage.name) or latest.hosts.get(usage.name)
                if host is None:
                    raise _unknown("host", [usage.name])
                changed[usage.name] = _with_usage(host, usage, f"usages[{index}]")
            new_hosts = dict(latest.hosts)
            new_hosts.update(changed)
            ticket, version = self._make(new_hosts, latest.aggregates,
                                         lambda fleet: self._columns_after_usage(fleet, changed),
                                         Change(0, 0, hosts=list(changed.values())))
        return self._acknowledge(ticket, version)

    def status(self) -> FleetStatus:
        snapshot = self._writer.current
        committed = self._committed
        return FleetStatus(
            generation=0 if snapshot is None else snapshot.generation,
            epoch=self.epoch,
            host_count=len(committed.hosts),
            aggregate_count=len(committed.aggregates),
            age_seconds=0.0 if snapshot is None else max(0.0, time.time() - snapshot.written_at),
            snapshot_bytes=0 if snapshot is None else snapshot.nbytes,
        )

    def _make(self, hosts: dict[str, Host], aggregates: dict[int, Aggregate], build_columns: BuildColumns,
              change: Change) -> tuple[Ticket, _Version]:
        """Build the new version and queue it for the store. Caller holds the lock."""
        columns = build_columns(Fleet(hosts=tuple(hosts.values()), aggregates=tuple(aggregates.values())))
        version = _Version(self._latest.generation + 1, hosts, aggregates, columns, time.time_ns())
        change.generation, change.written_ns, change.payload = version.generation, version.written_ns, version
        ticket = self._store.submit(change)
        self._latest = version
        return ticket, version

    def _acknowledge(self, ticket: Ticket, version: _Version) -> int:
        """Wait until the change is durable and published (raises StoreError when it is not kept)."""
        ticket.wait()
        self._publish(version)
        return version.generation

    def _publish(self, version: _Version) -> None:
        """Publish the last durable version unless one at or after `version` is published already."""
        with self._publish_lock:
            current = self._writer.current
            if current is not None and current.generation >= version.generation:
                return
            durable = self._committed  # at or after `version`: it committed
            self._writer.publish(durable.columns, generation=durable.generation, epoch=self.epoch,
                                 written_ns=durable.written_ns)
            durable.columns = None

    def _columns_of(self, version: _Version):
        """A version's columns: its own until published, then the published segment's."""
        columns = version.columns
        if columns is None:
            current = self._writer.current
            if current is not None and current.generation == version.generation:
                columns = current.columns
        return columns

    def _on_commit(self, change: Change) -> None:
        """The store's writer thread: `change` and every change before it are durable."""
        self._committed = change.payload

    def _on_failure(self, error: StoreError) -> None:
        """The store's writer thread: undo the failed changes and those queued on top of them."""
        with self._lock:
            self._store.fail_queued(error)
            self._latest = self._committed

    def _columns_after_usage(self, fleet: Fleet, changed: dict[str, Host]):
        """The latest version's columns patched for the changed hosts' usage, when the builder
        can patch; a usage update is the frequent one, and only a handful of arrays derive from it."""
        latest = self._latest
        columns = self._columns_of(latest)
        if self._columns_with_usage is None or columns is None:
            return self._build_columns(fleet)
        rows = [columns.row_of(name) for name in changed]
        instances_changed = any(host.instances != latest.hosts[name].instances for name, host in changed.items())
        return self._columns_with_usage(columns, fleet.hosts, rows, instances_changed)


def _with_usage(host: Host, usage: HostUsage, path: str) -> Host:
    resources = dict(host.resources)
    for resource_class, used in usage.used.items():
        inventory = resources.get(resource_class)
        if inventory is None:
            raise InvalidField(f"{path}.used.{resource_class}",
                               f"host {host.name!r} has no {resource_class} inventory")
        if isinstance(used, bool) or not isinstance(used, int) or not 0 <= used <= MAX_USED:
            raise InvalidField(f"{path}.used.{resource_class}", f"must be an integer from 0 to {MAX_USED}")
        resources[resource_class] = dataclasses.replace(inventory, used=used)
    for name in ("num_instances", "num_io_ops"):
        value = getattr(usage, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise InvalidField(f"{path}.{name}", "must be a non-negative integer")
    return dataclasses.replace(
        host,
        resources=resources,
        num_instances=host.num_instances if usage.num_instances is None else usage.num_instances,
        num_io_ops=host.num_io_ops if usage.num_io_ops is None else usage.num_io_ops,
        instances=host.instances if usage.instances is None else tuple(usage.instances),
    )
