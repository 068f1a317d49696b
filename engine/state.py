"""The state owner's fleet: every change is validated, committed to the store, then published.

A change is computed on copies of the host and aggregate tables, with its columns built, while
changes are serialised; it is then committed to the store (engine.store, group commit) and, once
durable, published as its generation before the caller hears of it. A refused change touches
nothing; a change the store cannot keep is undone, with every change queued on top of it.

A usage update costs what it changes: the version keeps the base (the fleet as of the last other
change, with its columns) and the hosts whose usage changed since, and is published as a delta
segment on the base (engine.columns.usage_delta). Once the delta outgrows DELTA_ROWS (or
DELTA_INSTANCE_IDS), or on any other change, the next version is a new base.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from engine.fleetfile import validate_aggregates, validate_fleet, validate_hosts
from engine.model import MAX_USED, Aggregate, Fleet, Host, InvalidField
from engine.snapshot import SnapshotWriter
from engine.store import Change, FleetStore, StoreError, Ticket

# A delta that outgrows these becomes a new base. Each write copies the delta's rows (and readers
# decode its instance lists on first lookup), a new base costs the fleet's size once: for writes
# of r hosts the cheapest limit grows as sqrt(r), so a 32nd of the fleet (at least DELTA_MIN_ROWS)
# times sqrt(r), at most a quarter of the fleet.
DELTA_MIN_ROWS = 256
DELTA_FLEET_SHARE = 32
DELTA_INSTANCE_IDS = 16384


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
class _Base:
    """The fleet as of its last change other than usage; never changed once made."""
    generation: int
    hosts: dict[str, Host]  # in fleet order
    aggregates: dict[int, Aggregate]
    # Built for this base; once published, the published segment's (one copy, not two); None
    # while the history has no write.
    columns: object
    _rows: dict[str, int] | None = field(default=None, repr=False)

    def row(self, name: str) -> int:
        """The host's row in the columns (its place in fleet order); the index is made on first use."""
        if self._rows is None:
            self._rows = {host_name: row for row, host_name in enumerate(self.hosts)}
        return self._rows[name]


@dataclass
class _Version:
    """One state of the fleet, as of one generation: its base and the usage changed since."""
    generation: int
    base: _Base
    written_ns: int
    usage: dict[str, Host] = field(default_factory=dict)  # hosts whose usage changed since the base
    instance_lists: dict[int, tuple[str, ...]] = field(default_factory=dict)  # rows whose list changed
    delta: object = None  # engine.columns.usage_delta over the base; None: the version is its base

    def host(self, name: str) -> Host | None:
        return self.usage.get(name) or self.base.hosts.get(name)

    def hosts(self) -> dict[str, Host]:
        if not self.usage:
            return self.base.hosts
        return {name: self.usage.get(name, host) for name, host in self.base.hosts.items()}

    def fleet(self) -> Fleet:
        return Fleet(hosts=tuple(self.hosts().values()), aggregates=tuple(self.base.aggregates.values()))


def _unknown(kind: str, missing: list) -> KeyError:
    return KeyError(f"unknown {kind}: {', '.join(map(str, missing))}")


class FleetState:
    """Hosts by name in fleet order and aggregates by id, kept in `store`; thread-safe.

    Starts from what the store recovered, published at once under its own generation."""

    def __init__(self, writer: SnapshotWriter, store: FleetStore, build_columns: BuildColumns | None = None,
                 columns_with_usage: ColumnsWithUsage | None = None):
        """build_columns defaults to engine.columns' builder, with its usage patcher and usage
        deltas; any other builder rebuilds on usage updates too unless given its own
        `columns_with_usage`."""
        self._usage_delta = None
        if build_columns is None:
            from engine import columns  # lazily, so the state owner can be tested with any builder
            build_columns, columns_with_usage = columns.build_columns, columns.columns_with_usage
            self._usage_delta = columns.usage_delta
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
        self._latest = self._committed = _Version(
            recovered.generation, _Base(recovered.generation, hosts, aggregates, columns), recovered.written_ns)
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
            ticket, version = self._make_base(
                {host.name: host for host in fleet.hosts},
                {aggregate.id: aggregate for aggregate in fleet.aggregates}, self._build_columns,
                Change(0, 0, replace=True, hosts=list(fleet.hosts), aggregates=list(fleet.aggregates)))
        return self._acknowledge(ticket, version)

    def upsert_hosts(self, hosts: Iterable[Host]) -> int:
        """Add or replace hosts by name; a replaced host keeps its place in fleet order."""
        hosts = list(hosts)
        validate_hosts(hosts)
        with self._lock:
            new_hosts = dict(self._latest.hosts())
            new_hosts.update((host.name, host) for host in hosts)
            ticket, version = self._make_base(new_hosts, self._latest.base.aggregates, self._build_columns,
                                              Change(0, 0, hosts=hosts))
        return self._acknowledge(ticket, version)

    def remove_hosts(self, names: Iterable[str]) -> int:
        """Remove hosts by name, and from every aggregate they belong to."""
        doomed = set(names)
        with self._lock:
            latest = self._latest
            missing = sorted(doomed - latest.base.hosts.keys())
            if missing:
                raise _unknown("host", missing)
            new_hosts = {name: host for name, host in latest.hosts().items() if name not in doomed}
            left = [dataclasses.replace(aggregate, hosts=aggregate.hosts - doomed)
                    for aggregate in latest.base.aggregates.values() if aggregate.hosts & doomed]
            new_aggregates = {**latest.base.aggregates, **{aggregate.id: aggregate for aggregate in left}}
            ticket, version = self._make_base(new_hosts, new_aggregates, self._build_columns,
                                              Change(0, 0, removed_hosts=sorted(doomed), aggregates=left))
        return self._acknowledge(ticket, version)

    def upsert_aggregates(self, aggregates: Iterable[Aggregate]) -> int:
        """Add or replace aggregates by id; a member named before its host arrives joins when it does."""
        aggregates = list(aggregates)
        validate_aggregates(aggregates)
        with self._lock:
            new_aggregates = dict(self._latest.base.aggregates)
            new_aggregates.update((aggregate.id, aggregate) for aggregate in aggregates)
            ticket, version = self._make_base(self._latest.hosts(), new_aggregates, self._build_columns,
                                              Change(0, 0, aggregates=aggregates))
        return self._acknowledge(ticket, version)

    def remove_aggregates(self, ids: Iterable[int]) -> int:
        doomed = set(ids)
        with self._lock:
            latest = self._latest
            missing = sorted(doomed - latest.base.aggregates.keys())
            if missing:
                raise _unknown("aggregate id", missing)
            new_aggregates = {aggregate_id: aggregate for aggregate_id, aggregate in latest.base.aggregates.items()
                              if aggregate_id not in doomed}
            ticket, version = self._make_base(latest.hosts(), new_aggregates, self._build_columns,
                                              Change(0, 0, removed_aggregates=sorted(doomed)))
        return self._acknowledge(ticket, version)

    def update_usage(self, usages: Iterable[HostUsage]) -> int:
        """Replace hosts' usage; later entries for the same host apply on top of earlier ones."""
        usages = list(usages)
        with self._lock:
            latest = self._latest
            changed: dict[str, Host] = {}
            for index, usage in enumerate(usages):
                host = changed.get(usage.name) or latest.host(usage.name)
                if host is None:
                    raise _unknown("host", [usage.name])
                changed[usage.name] = _with_usage(host, usage, f"usages[{index}]")
            change = Change(0, 0, hosts=list(changed.values()))
            version = self._usage_version(latest, changed)
            if version is None:
                new_hosts = dict(latest.hosts())
                new_hosts.update(changed)
                ticket, version = self._make_base(new_hosts, latest.base.aggregates,
                                                  lambda fleet: self._columns_after_usage(fleet, changed), change)
            else:
                ticket = self._submit(version, change)
        return self._acknowledge(ticket, version)

    def status(self) -> FleetStatus:
        snapshot = self._writer.current
        committed = self._committed
        return FleetStatus(
            generation=0 if snapshot is None else snapshot.generation,
            epoch=self.epoch,
            host_count=len(committed.base.hosts),
            aggregate_count=len(committed.base.aggregates),
            age_seconds=0.0 if snapshot is None else max(0.0, time.time() - snapshot.written_at),
            snapshot_bytes=0 if snapshot is None else snapshot.nbytes,
        )

    def _make_base(self, hosts: dict[str, Host], aggregates: dict[int, Aggregate], build_columns: BuildColumns,
                   change: Change) -> tuple[Ticket, _Version]:
        """Build the new version, a base, and queue it for the store. Caller holds the lock."""
        columns = build_columns(Fleet(hosts=tuple(hosts.values()), aggregates=tuple(aggregates.values())))
        generation = self._latest.generation + 1
        version = _Version(generation, _Base(generation, hosts, aggregates, columns), time.time_ns())
        return self._submit(version, change), version

    def _usage_version(self, latest: _Version, changed: dict[str, Host]) -> _Version | None:
        """The version `changed` makes as a delta on the latest base; None when it should be a base."""
        base = latest.base
        base_columns = base.columns
        if self._usage_delta is None or base_columns is None:
            return None
        usage = {**latest.usage, **changed}
        instance_lists = dict(latest.instance_lists)
        rows = {}
        for name, host in changed.items():
            row = base.row(name)
            rows[row] = host
            if row in instance_lists or host.instances != base.hosts[name].instances:
                instance_lists[row] = host.instances
        if len(usage) > _delta_row_limit(len(base.hosts), len(changed)) or sum(map(len, instance_lists.values())) > DELTA_INSTANCE_IDS:
            return None
        return _Version(latest.generation + 1, base, time.time_ns(), usage, instance_lists,
                        self._usage_delta(base_columns, latest.delta, latest.generation + 1, rows, instance_lists))

    def _submit(self, version: _Version, change: Change) -> Ticket:
        """Queue the version's change for the store; it becomes the latest. Caller holds the lock."""
        change.generation, change.written_ns, change.payload = version.generation, version.written_ns, version
        ticket = self._store.submit(change)
        self._latest = version
        return ticket

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
            base = durable.base
            published_base = self._writer.base
            if published_base is None or published_base.generation != base.generation:
                # A base not published yet (a later version overtook it in one group commit).
                snapshot = self._writer.publish(base.columns, generation=base.generation, epoch=self.epoch,
                                                written_ns=durable.written_ns)
                base.columns = snapshot.columns  # the segment's: one copy of the fleet, not two
            if durable.delta is not None:
                self._writer.publish_delta(durable.delta, generation=durable.generation, epoch=self.epoch,
                                           written_ns=durable.written_ns)

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
        columns = latest.base.columns
        if self._columns_with_usage is None or columns is None:
            return self._build_columns(fleet)
        changed = {**latest.usage, **changed}  # the base's columns miss the usage changed since
        rows = [latest.base.row(name) for name in changed]
        instances_changed = any(host.instances != latest.base.hosts[name].instances
                                for name, host in changed.items())
        return self._columns_with_usage(columns, fleet.hosts, rows, instances_changed)


def _delta_row_limit(host_count: int, hosts_per_write: int) -> int:
    share = max(DELTA_MIN_ROWS, host_count // DELTA_FLEET_SHARE) * math.isqrt(hosts_per_write)
    return max(DELTA_MIN_ROWS, min(share, host_count // 4))


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
