"""`placecheck sync openstack`: keep placecheck's fleet equal to OpenStack Placement and Nova.

A full sync first (ReplaceFleet), then a poll every interval. Placement has no changes-since
query, but its provider list (one call) carries each provider's `generation`, which moves on
any change to the provider's inventories, allocations, traits or aggregates; a poll reads again
only the providers whose generation moved (4 calls each: inventories, usages, traits,
aggregates; a bounded pool of providers at once). Nova's compute services, hypervisors and host
aggregates (none of these APIs has a changes-since query either) are listed whole, one call each;
its servers (where they run, whether they load their host's I/O) all at the full sync, then
those changed since the previous poll (`changes-since`). Each host and
aggregate placecheck would hold is compared with what was last written, and only what changed
is written through the sidecar's FleetState API: RemoveHosts, UpsertHosts, UpdateUsage (when
only usage moved), UpsertAggregates, RemoveAggregates. A poll with nothing to write sends an
empty UpdateUsage, so that the sidecar's --max-snapshot-age tells a feeder that cannot reach its
sources from a quiet cloud. docs/openstack-feed.md maps every field.

Only root providers become hosts (Nova's compute nodes); nested and sharing providers are not
mapped yet.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from placecheck.openstack import aggregate_id
from placecheck.v1 import fleet_pb2, state_pb2
from placecheck_server.feed_metrics import FeedMetrics

log = logging.getLogger("placecheck.sync.openstack")

# 1.14: providers list their root; 1.19: aggregates come with the provider generation. Every
# Placement since Rocky serves it.
PLACEMENT_MICROVERSION = "1.19"
# 2.41: aggregates have their uuid (the Placement aggregate's); 2.53: hypervisors by uuid (the
# provider's). Below 2.88, which dropped running_vms from os-hypervisors. Pike on.
NOVA_MICROVERSION = "2.53"
DEFAULT_CONCURRENCY = 8
DEFAULT_INTERVAL_S = 10.0
DEFAULT_MAX_BACKOFF_S = 60.0
WRITE_TIMEOUT_S = 60.0


class FeedError(OSError):
    """A read or write that failed (a sync's, or `check --server`'s), with `kind` one of
    feed_metrics.ERROR_KINDS; an OSError, as the command reports I/O errors."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Inventory:
    total: int
    reserved: int
    allocation_ratio: float
    min_unit: int
    max_unit: int
    step_size: int


@dataclass(frozen=True)
class Provider:
    """One root resource provider as read from Placement."""

    uuid: str
    name: str
    generation: int
    inventories: dict[str, Inventory]
    used: dict[str, int]
    traits: frozenset[str]
    aggregates: frozenset[str]  # Placement aggregate UUIDs

    def host(self) -> fleet_pb2.Host:
        return fleet_pb2.Host(name=self.name, traits=sorted(self.traits), resources={
            resource_class: fleet_pb2.Inventory(
                total=inventory.total, reserved=inventory.reserved, allocation_ratio=inventory.allocation_ratio,
                min_unit=inventory.min_unit, max_unit=inventory.max_unit, step_size=inventory.step_size,
                used=self.used.get(resource_class, 0))
            for resource_class, inventory in self.inventories.items()})


@dataclass(frozen=True)
class Listed:
    """A provider as the provider list shows it."""

    uuid: str
    name: str
    generation: int


class ApiReader:
    """GETs through a keystoneauth Adapter, every failure a FeedError of `<service>_unreachable`
    or `<service>_error`; `on_request(service)` is called once per HTTP request."""

    service = ""
    title = ""
    microversion = ""

    def __init__(self, adapter, on_request: Callable[[str], None] = lambda service: None):
        self._adapter = adapter
        self._on_request = on_request

    def _get(self, path: str, *, missing_ok: bool = False) -> dict | None:
        """The JSON answer; None for a 404 when `missing_ok` (a provider deleted meanwhile)."""
        from keystoneauth1 import exceptions

        self._on_request(self.service)
        try:
            response = self._adapter.get(path, microversion=self.microversion, raise_exc=False)
        except exceptions.ConnectionError as error:  # refused, reset, timed out, DNS
            raise FeedError(f"{self.service}_unreachable", f"cannot reach {self.title} ({path}): {error}") from None
        except exceptions.ClientException as error:  # e.g. Keystone refused the credentials
            raise FeedError(f"{self.service}_error", f"{self.title} ({path}): {error}") from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise FeedError(f"{self.service}_error", f"{self.title} answered {response.status_code} to GET {path}: "
                                                     f"{response.text[:300]}")
        return response.json()


class PlacementReader(ApiReader):
    """Reads Placement's root providers, with a bounded pool for the per-provider reads."""

    service, title, microversion = "placement", "Placement", PLACEMENT_MICROVERSION

    def __init__(self, adapter, concurrency: int = DEFAULT_CONCURRENCY,
                 on_request: Callable[[str], None] = lambda service: None):
        super().__init__(adapter, on_request)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="placement-read")

    def list_roots(self) -> dict[str, Listed]:
        """Every root provider, by UUID (one call)."""
        listing = self._get("/resource_providers")["resource_providers"]
        return {entry["uuid"]: Listed(entry["uuid"], entry["name"], entry["generation"])
                for entry in listing if entry.get("root_provider_uuid", entry["uuid"]) == entry["uuid"]}

    def read(self, listed: Listed) -> Provider | None:
        """A provider's inventories, usages, traits and aggregates; None when it is gone."""
        base = f"/resource_providers/{listed.uuid}"
        answers = []
        for part in ("inventories", "usages", "traits", "aggregates"):
            answer = self._get(f"{base}/{part}", missing_ok=True)
            if answer is None:
                return None
            answers.append(answer)
        inventories, usages, traits, aggregates = answers
        return Provider(
            uuid=listed.uuid, name=listed.name, generation=listed.generation,
            inventories={resource_class: Inventory(
                total=record["total"], reserved=record["reserved"], allocation_ratio=record["allocation_ratio"],
                min_unit=record["min_unit"], max_unit=record["max_unit"], step_size=record["step_size"])
                for resource_class, record in inventories["inventories"].items()},
            used=dict(usages["usages"]), traits=frozenset(traits["traits"]),
            aggregates=frozenset(aggregates["aggregates"]))

    def read_all(self, listed: Iterable[Listed]) -> dict[str, Provider | None]:
        listed = list(listed)
        return {entry.uuid: provider for entry, provider in zip(listed, self._pool.map(self.read, listed))}

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass(frozen=True)
class NovaNode:
    """What Nova knows of one compute node (a root provider: same uuid), from os-hypervisors
    and its nova-compute service in os-services."""

    service_host: str
    enabled: bool  # the service's status "enabled"
    up: bool  # the service's state "up": heard from recently, not forced down
    host_ip: str
    hypervisor_type: str
    hypervisor_version: int | None


@dataclass(frozen=True)
class NovaAggregate:
    """A Nova host aggregate as os-aggregates shows it."""

    name: str
    hosts: frozenset[str]  # service hosts
    metadata: tuple[tuple[str, str], ...]  # sorted items: comparable and hashable


@dataclass(frozen=True)
class Server:
    """A Nova server as /servers/detail shows it: where it runs and whether it loads its host's I/O."""

    uuid: str
    node: str  # OS-EXT-SRV-ATTR:hypervisor_hostname: the compute node, named as its provider
    io_heavy: bool


# Nova's compute/stats.py io_workload: instances building, or in one of these tasks.
IO_TASK_STATES = frozenset({"resize_migrating", "rebuilding", "resize_prep", "image_snapshot", "image_backup",
                            "rescuing", "unshelving"})
NOVA_PAGE = 1000  # Nova's default [api] max_limit
# A poll asks Nova for the servers changed since the previous poll's start less this much: room
# for the feeder's and Nova's clocks to differ, and for a change committed while a poll read.
SERVER_CHANGES_OVERLAP_S = 60.0


@dataclass(frozen=True)
class NovaView:
    nodes: dict[str, NovaNode] = field(default_factory=dict)  # by compute node (= provider) uuid
    aggregates: dict[str, NovaAggregate] = field(default_factory=dict)  # by aggregate uuid
    servers: dict[str, Server] = field(default_factory=dict)  # by server uuid, those on a host

    def servers_on(self) -> dict[str, tuple[list[str], int]]:
        """Node name -> (its servers' uuids, sorted; how many are I/O-heavy)."""
        on: dict[str, tuple[list[str], int]] = {}
        for server in self.servers.values():
            uuids, io_heavy = on.get(server.node, ([], 0))
            uuids.append(server.uuid)
            on[server.node] = (uuids, io_heavy + server.io_heavy)
        return {node: (sorted(uuids), io_heavy) for node, (uuids, io_heavy) in on.items()}


class NovaReader(ApiReader):
    """Reads Nova's compute services, hypervisors and host aggregates: one call each."""

    service, title, microversion = "nova", "Nova", NOVA_MICROVERSION

    def read(self, servers: dict[str, Server] | None = None, changed_since: float | None = None) -> NovaView:
        """Nova's view; its servers are `servers` updated with those changed since `changed_since`
        (a Unix time), or all of them read afresh when either is None."""
        services = {service["host"]: service for service in self._get("/os-services?binary=nova-compute")["services"]}
        hypervisors = self._paged("/os-hypervisors/detail?", "hypervisors")
        aggregates = self._get("/os-aggregates")["aggregates"]
        nodes = {}
        for hypervisor in hypervisors:
            service = services.get(hypervisor["service"]["host"])
            if service is None:
                continue  # not a nova-compute node
            nodes[hypervisor["id"]] = NovaNode(
                service_host=service["host"], enabled=service["status"] == "enabled", up=service["state"] == "up",
                host_ip=hypervisor.get("host_ip") or "", hypervisor_type=hypervisor.get("hypervisor_type") or "",
                hypervisor_version=hypervisor.get("hypervisor_version"))
        if servers is None or changed_since is None:
            servers, changes = {}, self._servers(None)
        else:
            servers, changes = dict(servers), self._servers(changed_since - SERVER_CHANGES_OVERLAP_S)
        for server in changes:
            node = server.get("OS-EXT-SRV-ATTR:hypervisor_hostname")
            if server["status"] in ("DELETED", "SOFT_DELETED") or not node:
                servers.pop(server["id"], None)
                continue
            servers[server["id"]] = Server(server["id"], node, io_heavy=(
                server.get("OS-EXT-STS:vm_state") == "building" or server.get("OS-EXT-STS:task_state") in IO_TASK_STATES))
        return NovaView(nodes=nodes, aggregates={aggregate["uuid"]: NovaAggregate(
            name=aggregate["name"], hosts=frozenset(aggregate.get("hosts") or ()),
            metadata=tuple(sorted((aggregate.get("metadata") or {}).items()))) for aggregate in aggregates},
            servers=servers)

    def _servers(self, since: float | None) -> list[dict]:
        """Every server (deleted ones too, when `since` is given: Nova lists them then)."""
        query = "/servers/detail?all_tenants=1"
        if since is not None:
            query += "&changes-since=" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
        return self._paged(query + "&", "servers")

    def _paged(self, query: str, key: str) -> list[dict]:
        """Every item of a list Nova pages (at most [api] max_limit, 1,000 by default, a page)."""
        items, marker = [], ""
        while True:
            page = self._get(f"{query}limit={NOVA_PAGE}" + (f"&marker={marker}" if marker else ""))[key]
            items += page
            if len(page) < NOVA_PAGE:
                return items
            marker = page[-1]["id"]


def _host(provider: Provider, node: NovaNode | None, servers: tuple[list[str], int] | None) -> fleet_pb2.Host:
    """The host placecheck holds for a provider; with Nova's facts when Nova has its node, and
    the servers Nova places on it."""
    host = provider.host()
    if node is not None:
        host.enabled, host.up, host.host_ip, host.hypervisor_type = node.enabled, node.up, node.host_ip, \
            node.hypervisor_type
        if node.hypervisor_version is not None:
            host.hypervisor_version = node.hypervisor_version
    if servers is not None:
        uuids, io_heavy = servers
        host.instances.extend(uuids)
        host.num_instances, host.num_io_ops = len(uuids), io_heavy
    return host


def _without_usage(host: fleet_pb2.Host) -> fleet_pb2.Host:
    """The host without what UpdateUsage writes: used, instances and their counts."""
    copy = fleet_pb2.Host()
    copy.CopyFrom(host)
    for inventory in copy.resources.values():
        inventory.used = 0
    copy.ClearField("instances")
    copy.num_instances = copy.num_io_ops = 0
    return copy


def _usage(host: fleet_pb2.Host) -> state_pb2.HostUsage:
    return state_pb2.HostUsage(
        name=host.name, used={rc: inventory.used for rc, inventory in host.resources.items()},
        num_instances=host.num_instances, num_io_ops=host.num_io_ops,
        instances=state_pb2.InstanceList(uuids=host.instances))


def _aggregates(providers: Iterable[Provider], nova: NovaView) -> dict[int, fleet_pb2.Aggregate]:
    """Every aggregate, by placecheck id: Placement's (members: the providers in it) and Nova's
    (its name, metadata and hosts), one aggregate where Nova mirrored its own into Placement.
    Nova names a member by its service host; placecheck by the node's provider name."""
    members: dict[str, set[str]] = {}
    nodes_of_service: dict[str, set[str]] = {}
    for provider in providers:
        for aggregate_uuid in provider.aggregates:
            members.setdefault(aggregate_uuid, set()).add(provider.name)
        if (node := nova.nodes.get(provider.uuid)) is not None:
            nodes_of_service.setdefault(node.service_host, set()).add(provider.name)
    aggregates: dict[int, fleet_pb2.Aggregate] = {}
    by_id: dict[int, str] = {}
    for aggregate_uuid in sorted(members.keys() | nova.aggregates.keys()):
        identifier = aggregate_id(aggregate_uuid)
        other = by_id.setdefault(identifier, aggregate_uuid)
        if other != aggregate_uuid:
            raise FeedError("aggregate_id_collision",
                            f"aggregates {other} and {aggregate_uuid} share placecheck id {identifier}")
        in_nova = nova.aggregates.get(aggregate_uuid)
        hosts = set(members.get(aggregate_uuid, ()))
        for service_host in in_nova.hosts if in_nova else ():
            hosts |= nodes_of_service.get(service_host, {service_host})
        aggregates[identifier] = fleet_pb2.Aggregate(
            id=identifier, name=in_nova.name if in_nova else aggregate_uuid, hosts=sorted(hosts),
            metadata=dict(in_nova.metadata) if in_nova else {})
    return aggregates


@dataclass
class SyncReport:
    """What one sync did."""

    sync: str  # "full" or "incremental"
    listed_at: float  # Unix time of the provider list
    providers_read: int
    hosts: int
    removed: int = 0
    upserted: int = 0
    usage_updated: int = 0
    aggregates_written: int = 0


class OpenStackFeed:
    """placecheck's fleet kept equal to Placement's root providers (and, given a NovaReader,
    Nova's compute services and host aggregates), through a StateClient."""

    def __init__(self, placement: PlacementReader, state, nova: NovaReader | None = None,
                 metrics: FeedMetrics | None = None):
        self._placement = placement
        self._nova_reader = nova
        self._state = state
        self._metrics = metrics
        self._providers: dict[str, Provider] = {}  # by provider UUID, as last read
        self._nova = NovaView()
        self._listed_at: float | None = None  # when the last successful sync began reading
        self._hosts: dict[str, fleet_pb2.Host] = {}  # what placecheck holds, by name
        self._aggregates: dict[int, fleet_pb2.Aggregate] = {}
        self._epoch: str | None = None  # the sidecar's fleet history we wrote into
        self._history_changed = False
        self.needs_full_sync = True

    def sync(self) -> SyncReport:
        """A full sync when one is due (first, after a failed write, after the sidecar's fleet
        history changed), else a poll; FeedError when it fails."""
        kind = "full" if self.needs_full_sync else "incremental"
        started = time.monotonic()
        try:
            report = self._full_sync() if kind == "full" else self._poll()
        except FeedError as error:
            if self._metrics:
                self._metrics.failed(kind, error.kind)
            raise
        self.needs_full_sync, self._history_changed = self._history_changed, False
        if self._metrics:
            self._metrics.succeeded(kind, report.listed_at, time.monotonic() - started, report.hosts)
            self._metrics.providers_read.inc(report.providers_read)
        return report

    def _read_nova(self, changed_since: float | None = None) -> NovaView:
        if self._nova_reader is None:
            return NovaView()
        return self._nova_reader.read(self._nova.servers, changed_since)

    def _full_sync(self) -> SyncReport:
        listed_at = time.time()
        listing = self._placement.list_roots()
        nova = self._read_nova()
        read = self._placement.read_all(listing.values())
        providers = {uuid: provider for uuid, provider in read.items() if provider is not None}
        servers_on = nova.servers_on()
        hosts = {provider.name: _host(provider, nova.nodes.get(provider.uuid), servers_on.get(provider.name))
                 for provider in providers.values()}
        aggregates = _aggregates(providers.values(), nova)
        fleet = fleet_pb2.Fleet(hosts=[hosts[name] for name in sorted(hosts)],
                                aggregates=[aggregates[identifier] for identifier in sorted(aggregates)])
        # Placement is the truth: an empty Placement empties the fleet.
        self._write(lambda timeout: self._state.replace_fleet(fleet, allow_empty=True, timeout=timeout))
        self._history_changed = False  # the new history now holds the whole fleet
        self._providers, self._nova, self._hosts, self._aggregates = providers, nova, hosts, aggregates
        self._listed_at = listed_at
        return SyncReport("full", listed_at, providers_read=len(listing), hosts=len(hosts),
                          upserted=len(hosts), aggregates_written=len(aggregates))

    def _poll(self) -> SyncReport:
        listed_at = time.time()
        listing = self._placement.list_roots()
        nova = self._read_nova(changed_since=self._listed_at)
        known = self._providers
        moved = [entry for uuid, entry in listing.items()
                 if uuid not in known or known[uuid].generation != entry.generation]
        read = self._placement.read_all(moved)
        providers = {uuid: provider for uuid, provider in known.items() if uuid in listing}
        providers.update(read)
        providers = {uuid: provider for uuid, provider in providers.items() if provider is not None}

        # Hosts to rebuild: the providers read again, and those whose Nova node or servers changed.
        by_name = {provider.name: provider for provider in providers.values()}
        rebuilt = {provider.name for provider in read.values() if provider is not None}
        rebuilt |= {provider.name for uuid, provider in providers.items()
                    if nova.nodes.get(uuid) != self._nova.nodes.get(uuid)}
        servers_on, servers_before = nova.servers_on(), self._nova.servers_on()
        rebuilt |= {name for name in servers_on.keys() | servers_before.keys()
                    if name in by_name and servers_on.get(name) != servers_before.get(name)}
        hosts = {name: host for name, host in self._hosts.items() if name in by_name}
        removed = sorted(self._hosts.keys() - hosts.keys())
        upserts, usages = [], []
        for name in sorted(rebuilt):
            provider = by_name[name]
            host = _host(provider, nova.nodes.get(provider.uuid), servers_on.get(name))
            before = hosts.get(name)
            if before is None or _without_usage(before) != _without_usage(host):
                upserts.append(host)
            elif before != host:
                usages.append(_usage(host))
            hosts[name] = host
        aggregates = _aggregates(providers.values(), nova)
        changed_aggregates = [aggregate for identifier, aggregate in sorted(aggregates.items())
                              if self._aggregates.get(identifier) != aggregate]
        emptied = sorted(self._aggregates.keys() - aggregates.keys())

        # Hosts before the aggregates that name them; a failure part-way leaves placecheck
        # between two states, so the next sync is a full one.
        writes = [
            (removed, lambda timeout: self._state.remove_hosts(removed, timeout=timeout)),
            (upserts, lambda timeout: self._state.upsert_hosts(upserts, timeout=timeout)),
            (usages, lambda timeout: self._state.update_usage(usages, timeout=timeout)),
            (changed_aggregates, lambda timeout: self._state.upsert_aggregates(changed_aggregates, timeout=timeout)),
            (emptied, lambda timeout: self._state.remove_aggregates(emptied, timeout=timeout)),
        ]
        due = [write for items, write in writes if items]
        # Nothing changed: an empty usage update still tells the sidecar its fleet is current.
        for write in due or [lambda timeout: self._state.update_usage([], timeout=timeout)]:
            self._write(write)
        self._providers, self._nova, self._hosts, self._aggregates = providers, nova, hosts, aggregates
        self._listed_at = listed_at
        return SyncReport("incremental", listed_at, providers_read=len(moved), hosts=len(hosts),
                          removed=len(removed), upserted=len(upserts), usage_updated=len(usages),
                          aggregates_written=len(changed_aggregates) + len(emptied))

    def _write(self, write: Callable[[float], object]) -> None:
        """One FleetState call; a failure (or another fleet history than before) makes the next
        sync a full one."""
        self.needs_full_sync = True  # until this sync's last write lands
        try:
            generation = write(WRITE_TIMEOUT_S)
        except grpc.RpcError as error:
            unavailable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            raise FeedError("placecheck_unavailable" if unavailable else "placecheck_refused",
                            f"placecheck {error.code().name}: {error.details()}") from None
        if self._epoch not in (None, generation.epoch):
            log.warning("the sidecar's fleet history changed (%s, was %s): a full sync follows",
                        generation.epoch, self._epoch)
            self._history_changed = True
        self._epoch = generation.epoch


def connect(cloud: str | None, service_type: str, concurrency: int = 1, timeout: float = 30.0):
    """A keystoneauth Adapter for one service (placement, compute), configured by openstacksdk
    from a clouds.yaml cloud (None: $OS_CLOUD, or the OS_* variables), with an HTTP connection
    per reader thread. A plain Adapter rather than openstacksdk's proxy: that one asks the
    service for its versions when made, so a feeder started while the service is down would
    stop instead of retrying."""
    import openstack.config
    from keystoneauth1.adapter import Adapter
    from keystoneauth1.session import TCPKeepAliveAdapter

    region = openstack.config.OpenStackConfig().get_one(cloud=cloud)
    session = region.get_session()
    session.timeout = session.timeout or timeout  # clouds.yaml's api_timeout, else ours: never wait forever
    http = TCPKeepAliveAdapter(pool_maxsize=concurrency)
    for scheme in ("https://", "http://"):
        session.session.mount(scheme, http)
    return Adapter(session=session, service_type=region.get_service_type(service_type),
                   interface=region.get_interface(service_type), region_name=region.get_region_name(service_type),
                   endpoint_override=region.get_endpoint(service_type))


def run(feed: OpenStackFeed, interval: float, stop: threading.Event,
        max_backoff: float = DEFAULT_MAX_BACKOFF_S) -> None:
    """Sync every `interval` seconds until `stop`; after a failure, again after a backoff that
    doubles per failure up to `max_backoff` (with jitter, so feeders do not retry in step)."""
    failures = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            report = feed.sync()
        except FeedError as error:
            failures += 1
            delay = min(max_backoff, interval * 2 ** (failures - 1)) * random.uniform(0.8, 1.0)
            log.warning("sync failed (%s, %d in a row): %s; retrying in %.1fs", error.kind, failures, error, delay)
        else:
            if failures:
                log.info("sync succeeded again after %d failures", failures)
            failures = 0
            delay = interval - (time.monotonic() - started)
            log.log(logging.INFO if report.sync == "full" else logging.DEBUG, "%s", report)
        stop.wait(max(0.0, delay))
