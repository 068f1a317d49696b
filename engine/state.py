"""The state owner's fleet: every change is validated, committed to the store, then published.

The columns are the state: the owner keeps the fleet's columns (engine.columns, the published
segment's own, so one copy) and its aggregates, and no Host per host; a write reads the hosts it
needs back from the columns (engine.columns.host_at). A change is computed while changes are
serialised, committed to the store (engine.store, group commit) and, once durable, published as
its generation before the caller hears of it. A refused change touches nothing; a change the
store cannot keep is undone, with every change queued on top of it.

A write costs what it changes:
- a usage update is published as a delta segment on the base (the fleet as of the last other
  change; engine.columns.usage_delta) until the delta outgrows DELTA_ROWS (or DELTA_INSTANCE_IDS);
- any other change makes a new base by splicing the changed rows into the last one
  (engine.columns_splice); only a whole-fleet replace builds the columns from scratch.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Collection, Iterable, Sequence

from placecheck_engine.columns import Columns, build_columns, host_at, overlay, usage_delta
from placecheck_engine.columns_splice import splice
from placecheck_engine.fleetfile import (numa_cell_to_json, numa_cells_from_json, pci_pool_to_json, pci_pools_from_json,
                                         validate_aggregates, validate_fleet, validate_hosts, validate_numa_cells,
                                         validate_pci_pools)
from placecheck_engine.model import MAX_COUNT, MAX_USED, Aggregate, Fleet, Host, InvalidField, Inventory, NumaCell, PciPool
from placecheck_engine.snapshot import SnapshotWriter
from placecheck_engine.store import Change, FleetStore, Recovered, StoreDamaged, StoreError, Ticket

log = logging.getLogger(__name__)

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
    # Replace the host's NUMA cells (pinned CPUs, memory and pages used) and PCI pools (free
    # devices): applied as a host change (a new base), not a usage delta.
    numa_cells: tuple[NumaCell, ...] | None = None
    pci_pools: tuple[PciPool, ...] | None = None

    def then(self, later: "HostUsage") -> "HostUsage":
        """This usage with `later` applied on top."""
        return HostUsage(self.name, {**self.used, **later.used},
                         *(getattr(self, name) if getattr(later, name) is None else getattr(later, name)
                           for name in _REPLACED_FIELDS))

    @property
    def changes_topology(self) -> bool:
        return self.numa_cells is not None or self.pci_pools is not None


_REPLACED_FIELDS = ("num_instances", "num_io_ops", "instances", "numa_cells", "pci_pools")


def usage_to_json(usage: HostUsage) -> dict:
    document = {"name": usage.name, "used": usage.used}
    for name in ("num_instances", "num_io_ops", "instances"):
        if getattr(usage, name) is not None:
            document[name] = getattr(usage, name)
    if usage.numa_cells is not None:
        document["numa_cells"] = [numa_cell_to_json(cell) for cell in usage.numa_cells]
    if usage.pci_pools is not None:
        document["pci_pools"] = [pci_pool_to_json(pool) for pool in usage.pci_pools]
    return document


def _usage_from_json(document: dict) -> HostUsage:
    instances, cells, pools = (document.get(name) for name in ("instances", "numa_cells", "pci_pools"))
    return HostUsage(**{**document, "instances": None if instances is None else tuple(instances),
                        "numa_cells": None if cells is None else numa_cells_from_json(cells, "numa_cells"),
                        "pci_pools": None if pools is None else pci_pools_from_json(pools, "pci_pools")})


def _host_from_json(document: dict) -> Host:
    """The inverse of host_to_json for a host that was validated before it was stored (a log
    written before hosts had NUMA cells and PCI pools lacks them)."""
    return Host(**{
        **document,
        "resources": {name: Inventory(**inventory) for name, inventory in document["resources"].items()},
        "traits": frozenset(document["traits"]),
        "supported_instances": tuple(map(tuple, document["supported_instances"])),
        "instances": tuple(document["instances"]),
        "numa_cells": numa_cells_from_json(document.get("numa_cells", []), "numa_cells"),
        "pci_pools": pci_pools_from_json(document.get("pci_pools", []), "pci_pools"),
    })


@dataclass(frozen=True)
class FleetStatus:
    generation: int  # of the published snapshot; 0 while the history has no write
    epoch: str  # the history's id (engine.store)
    host_count: int
    aggregate_count: int
    age_seconds: float  # since the last write the snapshot includes
    snapshot_bytes: int


@dataclass
class _Base:
    """The fleet as of its last change other than usage; never changed once made."""
    generation: int
    # Built for this base; once published, the published segment's (one copy, not two); None
    # while the history has no write.
    columns: Columns | None
    aggregates: dict[int, Aggregate]
    # Rows looked up so far: a write looks each of its hosts up twice, and a base lives only while
    # its delta stays small, so this holds at most the hosts written since the base.
    # (Names not in the fleet are not kept.)
    _rows: dict[str, int] = field(default_factory=dict, repr=False)

    def row(self, name: str) -> int | None:
        row = self._rows.get(name)
        if row is None and self.columns is not None:
            row = self.columns.row_of(name)
            if row is not None:
                self._rows[name] = row
        return row


@dataclass
class _Version:
    """One state of the fleet, as of one generation: its base and the usage changed since."""
    generation: int
    base: _Base
    written_ns: int
    usage: dict[str, HostUsage] = field(default_factory=dict)  # per host changed since the base, merged
    instance_lists: dict[int, tuple[str, ...]] = field(default_factory=dict)  # rows whose list changed
    delta: Columns | None = None  # engine.columns.usage_delta over the base; None: the version is its base

    def host(self, name: str, with_instances: bool = True) -> Host | None:
        """The host as of this version (without with_instances: its list only if it changed since the base)."""
        row = self.base.row(name)
        if row is None:
            return None
        host = host_at(self.base.columns, row, with_instances)
        usage = self.usage.get(name)
        return host if usage is None else _with_usage(host, usage, "usage")

    def columns(self) -> Columns | None:
        """The generation's columns: the base's, overlaid with the delta when there is one."""
        return self.base.columns if self.delta is None else overlay(self.base.columns, self.delta)

    def fleet(self) -> Fleet:
        columns = self.columns()
        hosts = () if columns is None else tuple(host_at(columns, row) for row in range(columns.host_count))
        return Fleet(hosts=hosts, aggregates=tuple(self.base.aggregates.values()))


def _unknown(kind: str, missing: list) -> KeyError:
    return KeyError(f"unknown {kind}: {', '.join(map(str, missing))}")


def recovered_columns(recovered: Recovered) -> Columns | None:
    """The fleet's columns as of the recovered generation: the checkpoint with the log replayed on
    it; None while the history has no write."""
    if not recovered.generation:
        return None
    checkpoint = None if recovered.checkpoint is None else Columns(*recovered.checkpoint)
    changed: dict[str, Host] = {}  # in the order they are appended, where new
    removed: set[str] = set()
    try:
        for entry in recovered.log:
            for document in entry.get("hosts", ()):
                host = _host_from_json(document)
                changed[host.name] = host
            for name in entry.get("removed_hosts", ()):
                changed.pop(name, None)
                removed.add(name)
            for document in entry.get("usages", ()):
                usage = _usage_from_json(document)
                host = changed.get(usage.name)
                if host is None and checkpoint is not None and usage.name not in removed:
                    row = checkpoint.row_of(usage.name)
                    host = None if row is None else host_at(checkpoint, row)
                if host is None:
                    raise KeyError(f"a usage update of {usage.name!r}, a host the fleet does not hold")
                changed[usage.name] = _with_usage(host, usage, "usage")
    except (ValueError, TypeError, KeyError, AttributeError, InvalidField) as error:
        raise StoreDamaged(f"the store's log is unreadable ({error!r}); move it aside to start an empty history") \
            from None
    return splice(checkpoint, list(changed.values()), removed, list(recovered.aggregates), members_changed=None)


class FleetState:
    """Hosts by name in fleet order and aggregates by id, kept in `store`; thread-safe.

    Starts from what the store recovered, published at once under its own generation."""

    def __init__(self, writer: SnapshotWriter, store: FleetStore):
        self._writer = writer
        self._store = store
        recovered = store.recovered
        self.epoch = recovered.epoch
        self._lock = threading.Lock()  # serialises changes up to their submission to the store
        self._publish_lock = threading.Lock()
        aggregates = {aggregate.id: aggregate for aggregate in recovered.aggregates}
        # _latest: the last change made (maybe not yet durable); _committed: the last durable one.
        self._latest = self._committed = _Version(
            recovered.generation, _Base(recovered.generation, recovered_columns(recovered), aggregates),
            recovered.written_ns)
        store.on_commit = self._on_commit
        store.on_failure = self._on_failure
        if recovered.generation:
            self._publish(self._committed)

    def fleet(self) -> Fleet:
        """The last acknowledged fleet (read back from the columns: for tests and exports)."""
        return self._committed.fleet()

    def replace(self, fleet: Fleet, allow_empty: bool = False, hosts_field: str = "fleet.hosts") -> int:
        """Replace the whole fleet; one without hosts only with allow_empty (else InvalidField
        naming `hosts_field`, the caller's name for the hosts)."""
        validate_fleet(fleet)
        return self.replace_columns(build_columns(fleet), fleet.aggregates, allow_empty, hosts_field)

    def replace_columns(self, columns: Columns, aggregates: Sequence[Aggregate], allow_empty: bool = False,
                        hosts_field: str = "fleet.hosts") -> int:
        """replace() of the validated fleet these columns were built from (build_columns), with its
        aggregates: a whole fleet may be encoded elsewhere (server.fleet_builder)."""
        if not columns.host_count and not allow_empty:
            raise InvalidField(hosts_field, "a fleet without hosts would remove every host; "
                                            "set allow_empty to mean it")
        with self._lock:
            ticket, version = self._make_base(
                columns, {aggregate.id: aggregate for aggregate in aggregates},
                Change(0, 0, replace_aggregates=True, aggregates=list(aggregates), checkpoint=columns))
        return self._acknowledge(ticket, version)

    def upsert_hosts(self, hosts: Iterable[Host]) -> int:
        """Add or replace hosts by name; a replaced host keeps its place in fleet order."""
        hosts = list(hosts)
        validate_hosts(hosts)
        with self._lock:
            latest = self._latest
            ticket, version = self._make_base(self._spliced(latest, hosts, (), latest.base.aggregates),
                                              latest.base.aggregates, Change(0, 0, hosts=hosts))
        return self._acknowledge(ticket, version)

    def remove_hosts(self, names: Iterable[str]) -> int:
        """Remove hosts by name, and from every aggregate they belong to."""
        doomed = set(names)
        with self._lock:
            latest = self._latest
            missing = sorted(name for name in doomed if latest.base.row(name) is None)
            if missing:
                raise _unknown("host", missing)
            left = [dataclasses.replace(aggregate, hosts=aggregate.hosts - doomed)
                    for aggregate in latest.base.aggregates.values() if aggregate.hosts & doomed]
            new_aggregates = {**latest.base.aggregates, **{aggregate.id: aggregate for aggregate in left}}
            ticket, version = self._make_base(self._spliced(latest, (), doomed, new_aggregates), new_aggregates,
                                              Change(0, 0, removed_hosts=sorted(doomed), aggregates=left))
        return self._acknowledge(ticket, version)

    def upsert_aggregates(self, aggregates: Iterable[Aggregate]) -> int:
        """Add or replace aggregates by id; a member named before its host arrives joins when it does."""
        aggregates = list(aggregates)
        validate_aggregates(aggregates)
        with self._lock:
            latest = self._latest
            new_aggregates = dict(latest.base.aggregates)
            new_aggregates.update((aggregate.id, aggregate) for aggregate in aggregates)
            ticket, version = self._make_base(
                self._spliced(latest, (), (), new_aggregates, {aggregate.id for aggregate in aggregates}),
                new_aggregates, Change(0, 0, aggregates=aggregates))
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
            ticket, version = self._make_base(self._spliced(latest, (), (), new_aggregates), new_aggregates,
                                              Change(0, 0, removed_aggregates=sorted(doomed)))
        return self._acknowledge(ticket, version)

    def update_usage(self, usages: Iterable[HostUsage]) -> int:
        """Replace hosts' usage; later entries for the same host apply on top of earlier ones."""
        usages = list(usages)
        with self._lock:
            latest = self._latest
            # A delta needs no instance list it does not change: hosts are read back without theirs.
            hosts = _hosts_after(latest, usages, with_instances=False)
            merged: dict[str, HostUsage] = {}  # each named host's usage since the base, this write's included
            for usage in usages:
                earlier = merged.get(usage.name) or latest.usage.get(usage.name)
                merged[usage.name] = usage if earlier is None else earlier.then(usage)
            change = Change(0, 0, usages=[usage_to_json(usage) for usage in usages])
            version = None if any(usage.changes_topology for usage in usages) else \
                self._usage_version(latest, hosts, merged)
            if version is None:
                ticket, version = self._make_base(
                    self._spliced(latest, list(_hosts_after(latest, usages, with_instances=True).values()), (),
                                  latest.base.aggregates),
                    latest.base.aggregates, change)
            else:
                ticket = self._submit(version, change)
        return self._acknowledge(ticket, version)

    def status(self) -> FleetStatus:
        snapshot = self._writer.current
        committed = self._committed
        columns = committed.base.columns
        return FleetStatus(
            generation=0 if snapshot is None else snapshot.generation,
            epoch=self.epoch,
            host_count=0 if columns is None else columns.host_count,
            aggregate_count=len(committed.base.aggregates),
            age_seconds=0.0 if snapshot is None else max(0.0, time.time() - snapshot.written_at),
            snapshot_bytes=0 if snapshot is None else snapshot.nbytes,
        )

    def _spliced(self, latest: _Version, upserted: Sequence[Host], removed: Collection[str],
                 aggregates: dict[int, Aggregate], members_changed: Collection[int] = ()) -> Columns:
        """The columns of the latest version with these changes, as a new base. The rows whose
        instance list changed since the base are spliced in too: an overlay holds their lists
        apart from the arrays. Caller holds the lock."""
        latest = self._undamaged(latest)
        replaced = {host.name for host in upserted} | set(removed)
        source = latest.columns()
        carried = [] if source is None else [host for host in (host_at(source, row) for row in latest.instance_lists)
                                             if host.name not in replaced]
        return splice(source, carried + list(upserted), removed, list(aggregates.values()),
                      members_changed=members_changed)

    def _undamaged(self, latest: _Version) -> _Version:
        """The latest version, or, when the published base segment (whose pages are the base's
        columns) was changed after publishing, the fleet read back from the store, so that nothing
        damaged is spliced into a new base or its checkpoint. Caller holds the lock."""
        if not self._writer.base_damaged():
            return latest
        if latest is not self._committed:
            raise StoreError("the published fleet segment was changed after publishing and changes are still "
                             "being committed; it is restored from the store once they are: retry")
        recovered = self._store.durable()
        log.error("the published fleet segment (generation %d) was changed after publishing; restoring the fleet "
                  "from the store as of generation %d", self._writer.base.generation, recovered.generation)
        aggregates = {aggregate.id: aggregate for aggregate in recovered.aggregates}
        restored = _Version(recovered.generation, _Base(recovered.generation, recovered_columns(recovered), aggregates),
                            recovered.written_ns)
        self._latest = self._committed = restored
        return restored

    def restore_if_damaged(self) -> bool:
        """Publish the fleet again, read back from the store, when the published base segment was
        changed after publishing (readers refuse it until a newer generation arrives; a fleet
        written only by usage updates would otherwise wait for its next base). Whether it did."""
        with self._lock:
            latest = self._latest
            if latest.base.columns is None or not self._writer.base_damaged():
                return False
            restored = self._undamaged(latest)
            ticket, version = self._make_base(restored.base.columns, restored.base.aggregates, Change(0, 0))
        self._acknowledge(ticket, version)
        return True

    def _make_base(self, columns: Columns, aggregates: dict[int, Aggregate], change: Change) -> tuple[Ticket, _Version]:
        """Queue the new version, a base, for the store. Caller holds the lock."""
        if change.checkpoint is None and self._store.wants_checkpoint():
            change.checkpoint = columns
        generation = self._latest.generation + 1
        version = _Version(generation, _Base(generation, columns, aggregates), time.time_ns())
        return self._submit(version, change), version

    def _usage_version(self, latest: _Version, hosts: dict[str, Host],
                       merged: dict[str, HostUsage]) -> _Version | None:
        """The version these hosts' new usage makes as a delta on the latest base; None when it should be a base."""
        base = latest.base
        if base.columns is None:
            return None
        usage = {**latest.usage, **merged}
        instance_lists = dict(latest.instance_lists)
        rows = {}
        for name, host in hosts.items():
            row = base.row(name)
            rows[row] = host
            if usage[name].instances is not None and (
                    row in instance_lists or host.instances != tuple(base.columns.instances_of(row))):
                instance_lists[row] = host.instances
        if len(usage) > _delta_row_limit(base.columns.host_count, len(hosts)) or \
                sum(map(len, instance_lists.values())) > DELTA_INSTANCE_IDS:
            return None
        return _Version(latest.generation + 1, base, time.time_ns(), usage, instance_lists,
                        usage_delta(base.columns, latest.delta, latest.generation + 1, rows, instance_lists))

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

    def _on_failure(self, error) -> None:
        """The store's writer thread: undo the failed changes and those queued on top of them."""
        with self._lock:
            self._store.fail_queued(error)
            self._latest = self._committed


def _hosts_after(latest: _Version, usages: list[HostUsage], with_instances: bool) -> dict[str, Host]:
    """Each host `usages` name, as they leave it (KeyError for a host the fleet does not hold)."""
    hosts: dict[str, Host] = {}
    for index, usage in enumerate(usages):
        host = hosts.get(usage.name) or latest.host(usage.name, with_instances)
        if host is None:
            raise _unknown("host", [usage.name])
        hosts[usage.name] = _with_usage(host, usage, f"usages[{index}]")
    return hosts


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
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT):
            raise InvalidField(f"{path}.{name}", f"must be an integer from 0 to {MAX_COUNT}")
    if usage.numa_cells is not None:
        validate_numa_cells(usage.numa_cells, f"{path}.numa_cells")
    if usage.pci_pools is not None:
        validate_pci_pools(usage.pci_pools, f"{path}.pci_pools")
    return dataclasses.replace(
        host,
        resources=resources,
        num_instances=host.num_instances if usage.num_instances is None else usage.num_instances,
        num_io_ops=host.num_io_ops if usage.num_io_ops is None else usage.num_io_ops,
        instances=host.instances if usage.instances is None else tuple(usage.instances),
        numa_cells=host.numa_cells if usage.numa_cells is None else tuple(usage.numa_cells),
        pci_pools=host.pci_pools if usage.pci_pools is None else tuple(usage.pci_pools),
    )
