"""Section 6: the snapshot. Publish time of a generation, time until every worker
decides on a new one, and the sidecar's proportional memory with 1 and 2 workers.

Publishing is measured in process with engine.snapshot.SnapshotWriter, against
copying the same bytes with numpy (section 7's copy bandwidth). Propagation goes
through a running sidecar: UpdateUsage publishes generation g; then one
CheckDestination with min_generation=g on each of enough connections that every
worker holds one (checked in /proc/net/tcp) returns once each worker decides on g.
Its baseline is the same fan-out of calls once every worker is on g.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench import workload
from bench.grpc_e2e import check_host
from bench.timing import Figure, format_bytes, format_ratio, format_seconds, median, private_bytes, pss_bytes
from engine.snapshot import SnapshotWriter
from placecheck import StateClient
from placecheck.v1 import placement_pb2, placement_pb2_grpc, state_pb2
from server.convert import request_to_proto

PUBLISH_TARGET_S = 0.2
EXTRA_WORKER_SHARE_TARGET = 0.25  # of the snapshot's size
MAX_CHANNELS = 32
TCP_ESTABLISHED = "01"


def measure_publish(hosts: int, repeats: int) -> tuple[list[float], int]:
    """Seconds per publish of the fleet's columns as a new generation, and the segment's size."""
    columns = workload.columns(hosts)
    seconds = []
    with SnapshotWriter(f"placecheck-bench-{os.getpid()}") as writer:
        for _ in range(repeats):
            started = time.perf_counter()
            snapshot = writer.publish(columns)
            seconds.append(time.perf_counter() - started)
    return seconds, snapshot.nbytes


def _established_tcp() -> dict[int, tuple[int, int]]:
    """Socket inode -> (local port, remote port) of every established TCP connection."""
    connections = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == TCP_ESTABLISHED:
                connections[int(fields[9])] = (int(fields[1].rsplit(":", 1)[1], 16),
                                               int(fields[2].rsplit(":", 1)[1], 16))
    return connections


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def workers_connected_to_us(worker_pids: list[int], port: int) -> set[int]:
    """The workers holding a connection from this process to the decision port."""
    connections = _established_tcp()
    our_ports = {connections[inode][0] for inode in _socket_inodes(os.getpid())
                 if inode in connections and connections[inode][1] == port}
    return {pid for pid in worker_pids
            if any(connections[inode][0] == port and connections[inode][1] in our_ports
                   for inode in _socket_inodes(pid) if inode in connections)}


@dataclass(frozen=True)
class Propagation:
    workers: int
    channels: int
    update_seconds: list[float]  # UpdateUsage round trip: the state owner rebuilds and publishes
    propagate_seconds: list[float]  # from UpdateUsage's return until every worker decided on it
    fan_out_seconds: list[float]  # the same calls with every worker already on the generation
    snapshot_bytes: int
    worker_pss: list[int]
    worker_private: list[int]
    supervisor_pss: int

    @property
    def total_pss(self) -> int:
        return self.supervisor_pss + sum(self.worker_pss)


def measure_propagation(decision_target: str, state_target: str, supervisor_pid: int,
                        worker_pids: list[int], hosts: int, repeats: int) -> Propagation:
    fleet = workload.fleet(hosts)
    request = request_to_proto(workload.request(hosts))
    port = int(decision_target.rsplit(":", 1)[1])
    channels, stubs = [], []
    try:
        # Connections until every worker holds one: SO_REUSEPORT picks the worker per connection.
        while workers_connected_to_us(worker_pids, port) != set(worker_pids):
            if len(channels) == MAX_CHANNELS:
                raise RuntimeError(f"{MAX_CHANNELS} connections did not reach all {len(worker_pids)} workers")
            channels.append(grpc.insecure_channel(decision_target, options=[
                ("grpc.use_local_subchannel_pool", 1), ("grpc.channel_id", len(channels))]))
            stubs.append(placement_pb2_grpc.PlacementCheckStub(channels[-1]))
            stubs[-1].CheckDestination(placement_pb2.CheckDestinationRequest(
                request=request, hosts=[check_host(hosts)]), timeout=30)

        def fan_out(min_generation: int) -> None:
            message = placement_pb2.CheckDestinationRequest(request=request, hosts=[check_host(hosts)],
                                                            min_generation=min_generation)
            calls = [stub.CheckDestination.future(message, timeout=60) for stub in stubs]
            if any(call.result().generation < min_generation for call in calls):
                raise RuntimeError(f"a worker answered below generation {min_generation}")

        updated, propagated, fanned_out = [], [], []
        host = fleet.hosts[0]
        with StateClient(state_target) as state:
            for repeat in range(repeats):
                usage = state_pb2.HostUsage(name=host.name, num_instances=host.num_instances + repeat + 1)
                started = time.perf_counter()
                generation = state.update_usage([usage], timeout=120)
                published = time.perf_counter()
                fan_out(generation)
                decided = time.perf_counter()
                fan_out(generation)
                fanned_out.append(time.perf_counter() - decided)
                updated.append(published - started)
                propagated.append(decided - published)
            snapshot_bytes = state.status().snapshot_bytes
    finally:
        for channel in channels:
            channel.close()
    return Propagation(len(worker_pids), len(channels), updated, propagated, fanned_out, snapshot_bytes,
                       [pss_bytes(pid) for pid in worker_pids], [private_bytes(pid) for pid in worker_pids],
                       pss_bytes(supervisor_pid))


def figures(publish_seconds: list[float], segment_bytes: int, hosts: int, copy_traffic: float,
            propagations: list[Propagation]) -> list[Figure]:
    publish = median(publish_seconds)
    copy_seconds = 2 * segment_bytes / copy_traffic  # copy traffic counts read and write
    result = [Figure(
        "6 snapshot", f"publish a generation, {hosts:,} hosts ({format_bytes(segment_bytes)})",
        format_seconds(publish), "numpy copy of as many bytes", format_seconds(copy_seconds),
        f"{format_ratio(publish / copy_seconds)} the copy", f"< {format_seconds(PUBLISH_TARGET_S)}",
        publish < PUBLISH_TARGET_S)]
    for run in propagations:
        propagate, fan_out = median(run.propagate_seconds), median(run.fan_out_seconds)
        result.append(Figure(
            "6 snapshot", f"{run.workers} worker{'s' if run.workers > 1 else ''}: published -> every worker "
                          f"decides on it (min_generation)",
            format_seconds(propagate), f"same {run.channels} calls, generation already there",
            format_seconds(fan_out), f"{format_ratio(propagate / fan_out)} the calls", "-", None,
            f"UpdateUsage of one host (rebuild + publish) takes {format_seconds(median(run.update_seconds))}"))
        result.append(Figure(
            "6 snapshot", f"{run.workers} worker{'s' if run.workers > 1 else ''}: PSS, supervisor + workers",
            format_bytes(run.total_pss), "snapshot segment", format_bytes(run.snapshot_bytes),
            f"{format_ratio(run.total_pss / run.snapshot_bytes)} the snapshot", "-", None,
            "workers " + ", ".join(f"{format_bytes(pss)} (private {format_bytes(private)})"
                                   for pss, private in zip(run.worker_pss, run.worker_private))
            + f"; supervisor {format_bytes(run.supervisor_pss)}"))
    by_workers = {run.workers: run for run in propagations}
    if 1 in by_workers and 2 in by_workers:
        # The workers alone: they are the ones with the snapshot's pages resident (a lone worker's
        # private pages include it), so their PSS sums hold it once whatever their number; the
        # supervisor's own PSS (the fleet as Python objects) drifts by tens of MiB between
        # sidecars and would drown the difference.
        extra = sum(by_workers[2].worker_pss) - sum(by_workers[1].worker_pss)
        share = extra / by_workers[2].snapshot_bytes
        result.append(Figure(
            "6 snapshot", "PSS the second worker adds (workers' PSS, 2 minus 1)", format_bytes(extra),
            "snapshot segment", format_bytes(by_workers[2].snapshot_bytes), f"{share:.2f} of the snapshot",
            f"< {EXTRA_WORKER_SHARE_TARGET:g} of the snapshot", share < EXTRA_WORKER_SHARE_TARGET))
    return result
