"""The state owner's fleet: every change is validated, then published as a new snapshot generation.

A change is applied to copies of the host and aggregate tables; only once the
new generation is published do the copies become the fleet, so a refused or
failed change leaves both the fleet and the published generation as they were.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from engine.fleetfile import validate_aggregates, validate_fleet, validate_hosts
from engine.model import Aggregate, Fleet, Host, InvalidField
from engine.snapshot import SnapshotWriter


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
    generation: int  # 0 before the first publish
    host_count: int
    aggregate_count: int
    age_seconds: float  # since the current generation was published
    snapshot_bytes: int


BuildColumns = Callable[[Fleet], object]
# (previous columns, the new fleet's hosts in row order, rows whose usage changed, whether any
# instance list changed) -> the new fleet's columns; see engine.columns.columns_with_usage.
ColumnsWithUsage = Callable[[object, tuple[Host, ...], list[int], bool], object]


def _unknown(kind: str, missing: list) -> KeyError:
    return KeyError(f"unknown {kind}: {', '.join(map(str, missing))}")


class FleetState:
    """Hosts by name in fleet order and aggregates by id; thread-safe."""

    def __init__(self, writer: SnapshotWriter, build_columns: BuildColumns | None = None,
                 columns_with_usage: ColumnsWithUsage | None = None):
        """build_columns defaults to engine.columns' builder, with its usage patcher; any other
        builder rebuilds on usage updates too unless given its own `columns_with_usage`."""
        if build_columns is None:
            from engine import columns  # lazily, so the state owner can be tested with any builder
            build_columns, columns_with_usage = columns.build_columns, columns.columns_with_usage
        self._writer = writer
        self._build_columns = build_columns
        self._columns_with_usage = columns_with_usage
        self._lock = threading.Lock()
        self._hosts: dict[str, Host] = {}
        self._aggregates: dict[int, Aggregate] = {}

    def fleet(self) -> Fleet:
        with self._lock:
            return Fleet(hosts=tuple(self._hosts.values()), aggregates=tuple(self._aggregates.values()))

    def replace(self, fleet: Fleet) -> int:
        validate_fleet(fleet)
        with self._lock:
            return self._publish({host.name: host for host in fleet.hosts},
                                 {aggregate.id: aggregate for aggregate in fleet.aggregates})

    def upsert_hosts(self, hosts: Iterable[Host]) -> int:
        """Add or replace hosts by name; a replaced host keeps its place in fleet order."""
        hosts = list(hosts)
        validate_hosts(hosts)
        with self._lock:
            new_hosts = dict(self._hosts)
            new_hosts.update((host.name, host) for host in hosts)
            return self._publish(new_hosts, self._aggregates)

    def remove_hosts(self, names: Iterable[str]) -> int:
        """Remove hosts by name, and from every aggregate they belong to."""
        doomed = set(names)
        with self._lock:
            missing = sorted(doomed - self._hosts.keys())
            if missing:
                raise _unknown("host", missing)
            new_hosts = {name: host for name, host in self._hosts.items() if name not in doomed}
            new_aggregates = {
                aggregate_id: aggregate if not aggregate.hosts & doomed
                else dataclasses.replace(aggregate, hosts=aggregate.hosts - doomed)
                for aggregate_id, aggregate in self._aggregates.items()
            }
            return self._publish(new_hosts, new_aggregates)

    def upsert_aggregates(self, aggregates: Iterable[Aggregate]) -> int:
        """Add or replace aggregates by id; a member named before its host arrives joins when it does."""
        aggregates = list(aggregates)
        with self._lock:
            validate_aggregates(aggregates)
            new_aggregates = dict(self._aggregates)
            new_aggregates.update((aggregate.id, aggregate) for aggregate in aggregates)
            return self._publish(self._hosts, new_aggregates)

    def remove_aggregates(self, ids: Iterable[int]) -> int:
        doomed = set(ids)
        with self._lock:
            missing = sorted(doomed - self._aggregates.keys())
            if missing:
                raise _unknown("aggregate id", missing)
            return self._publish(self._hosts, {aggregate_id: aggregate
                                               for aggregate_id, aggregate in self._aggregates.items()
                                               if aggregate_id not in doomed})

    def update_usage(self, usages: Iterable[HostUsage]) -> int:
        """Replace hosts' usage; later entries for the same host apply on top of earlier ones."""
        usages = list(usages)
        with self._lock:
            changed: dict[str, Host] = {}
            for index, usage in enumerate(usages):
                host = changed.get(usage.name) or self._hosts.get(usage.name)
                if host is None:
                    raise _unknown("host", [usage.name])
                changed[usage.name] = _with_usage(host, usage, f"usages[{index}]")
            new_hosts = dict(self._hosts)
            new_hosts.update(changed)
            return self._publish(new_hosts, self._aggregates, lambda fleet: self._columns_after_usage(fleet, changed))

    def status(self) -> FleetStatus:
        with self._lock:
            snapshot = self._writer.current
            return FleetStatus(
                generation=0 if snapshot is None else snapshot.generation,
                host_count=len(self._hosts),
                aggregate_count=len(self._aggregates),
                age_seconds=0.0 if snapshot is None else max(0.0, time.time() - snapshot.published_at),
                snapshot_bytes=0 if snapshot is None else snapshot.nbytes,
            )

    def _publish(self, hosts: dict[str, Host], aggregates: dict[int, Aggregate],
                 build_columns: BuildColumns | None = None) -> int:
        """Build and publish the new fleet; adopt it only once it is published. Caller holds the lock."""
        fleet = Fleet(hosts=tuple(hosts.values()), aggregates=tuple(aggregates.values()))
        snapshot = self._writer.publish((build_columns or self._build_columns)(fleet))
        self._hosts, self._aggregates = hosts, aggregates
        return snapshot.generation


    def _columns_after_usage(self, fleet: Fleet, changed: dict[str, Host]):
        """The current generation's columns patched for the changed hosts' usage, when the builder
        can patch; a usage update is the frequent one, and only a handful of arrays derive from it."""
        current = self._writer.current
        if self._columns_with_usage is None or current is None:
            return self._build_columns(fleet)
        rows = [current.columns.row_of(name) for name in changed]
        instances_changed = any(host.instances != self._hosts[name].instances for name, host in changed.items())
        return self._columns_with_usage(current.columns, fleet.hosts, rows, instances_changed)


def _with_usage(host: Host, usage: HostUsage, path: str) -> Host:
    resources = dict(host.resources)
    for resource_class, used in usage.used.items():
        inventory = resources.get(resource_class)
        if inventory is None:
            raise InvalidField(f"{path}.used.{resource_class}",
                               f"host {host.name!r} has no {resource_class} inventory")
        if isinstance(used, bool) or not isinstance(used, int) or used < 0:
            raise InvalidField(f"{path}.used.{resource_class}", "must be a non-negative integer")
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
