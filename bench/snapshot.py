"""Section 6: the snapshot. Publish time of a generation, time until every worker
decides on a new one, and the sidecar's proportional memory with 1 and 2 workers.

Publishing is measured in process with engine.snapshot.SnapshotWriter, against
copying the same bytes with numpy (section 7's copy bandwidth). Propagation goes
through a running sidecar, for two kinds of UpdateUsage of one host: usage alone,
and a changed instance list. Each is timed twice: the UpdateUsage round trip (the
state owner commits it and publishes generation g, a delta on the base), then, from its return, until
every worker decides on g: one CheckDestination with min_generation=g on each of
enough connections that every worker holds one (checked in /proc/net/tcp). The
latter's baseline is the same fan-out of calls once every worker is on g.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass

import grpc

from bench import workload
from bench.grpc_e2e import check_host
from bench.timing import Figure, descendant_pids, format_bytes, format_ratio, format_seconds, median, private_bytes, \
    pss_bytes, with_spread
from placecheck_engine.model import Host
from placecheck_engine.snapshot import SnapshotWriter
from placecheck import StateClient
from placecheck.v1 import placement_pb2, placement_pb2_grpc, state_pb2
from placecheck_server.convert import request_to_proto

PUBLISH_TARGET_S = 0.2
UPDATE_P50_TARGET_S = 0.002  # one host's UpdateUsage acknowledged; then decided on by every worker
EXTRA_WORKER_SHARE_TARGET = 0.25  # of the snapshot's size


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


@dataclass(frozen=True)
class UpdateTimes:
    """One kind of UpdateUsage, repeated: seconds per repeat."""
    what: str
    update_seconds: list[float]  # UpdateUsage round trip: the state owner patches the columns and publishes
    decide_seconds: list[float]  # from UpdateUsage's return until every worker decided on its generation
    fan_out_seconds: list[float]  # the same calls with every worker already on the generation


@dataclass(frozen=True)
class Propagation:
    workers: int
    channels: int
    updates: list[UpdateTimes]
    snapshot_bytes: int
    worker_pss: list[int]
    worker_private: list[int]
    supervisor_pss: int
    helpers_pss: int  # the supervisor's other descendants: multiprocessing's fork server, resource tracker

    @property
    def workers_side_pss(self) -> int:
        """The workers and their helpers: a fork server shares its pages with the workers it forks."""
        return sum(self.worker_pss) + self.helpers_pss

    @property
    def total_pss(self) -> int:
        return self.supervisor_pss + self.workers_side_pss


def _updates(host: Host, repeat: int) -> dict[str, state_pb2.HostUsage]:
    """The kinds of update measured, each changing `host` differently on every repeat. Usage
    alone patches usage-derived columns; a changed instance list also touches the instance ids
    (the instance index of anti-affinity and DifferentHost), so both are timed."""
    placed = str(uuid.UUID(int=repeat + 1, version=4))  # a boot landing on the host
    return {
        "usage of one host (instance count)":
            state_pb2.HostUsage(name=host.name, num_instances=host.num_instances + repeat + 1),
        "instance list of one host (+1 instance, and count)":
            state_pb2.HostUsage(name=host.name, num_instances=len(host.instances) + 1,
                                instances=state_pb2.InstanceList(uuids=[*host.instances, placed])),
    }


def measure_propagation(worker_targets: list[str], state_target: str, supervisor_pid: int,
                        worker_pids: list[int], hosts: int, repeats: int) -> Propagation:
    """`worker_targets`: each worker's own address (--worker-ports), so one call reaches each."""
    fleet = workload.fleet(hosts)
    request = request_to_proto(workload.request(hosts))
    channels = [grpc.insecure_channel(target) for target in worker_targets]
    stubs = [placement_pb2_grpc.PlacementCheckStub(channel) for channel in channels]
    try:
        for stub in stubs:  # connected before the clock starts
            stub.CheckDestination(placement_pb2.CheckDestinationRequest(request=request, hosts=[check_host(hosts)]),
                                  timeout=30)

        def fan_out(min_generation: int) -> None:
            message = placement_pb2.CheckDestinationRequest(request=request, hosts=[check_host(hosts)],
                                                            min_generation=min_generation)
            calls = [stub.CheckDestination.future(message, timeout=60) for stub in stubs]
            if any(call.result().generation < min_generation for call in calls):
                raise RuntimeError(f"a worker answered below generation {min_generation}")

        times = {what: UpdateTimes(what, [], [], []) for what in _updates(fleet.hosts[0], 0)}
        with StateClient(state_target) as state:
            for repeat in range(repeats):
                for what, usage in _updates(fleet.hosts[0], repeat).items():
                    started = time.perf_counter()
                    generation = state.update_usage([usage], timeout=120)
                    published = time.perf_counter()
                    fan_out(generation)
                    decided = time.perf_counter()
                    fan_out(generation)
                    times[what].fan_out_seconds.append(time.perf_counter() - decided)
                    times[what].update_seconds.append(published - started)
                    times[what].decide_seconds.append(decided - published)
            snapshot_bytes = state.status().snapshot_bytes
    finally:
        for channel in channels:
            channel.close()
    helper_pids = set(descendant_pids(supervisor_pid)) - set(worker_pids)
    return Propagation(len(worker_pids), len(channels), list(times.values()), snapshot_bytes,
                       [pss_bytes(pid) for pid in worker_pids], [private_bytes(pid) for pid in worker_pids],
                       pss_bytes(supervisor_pid), sum(pss_bytes(pid) for pid in helper_pids))


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
        workers = f"{run.workers} worker{'s' if run.workers > 1 else ''}"
        for update in run.updates:
            result.append(Figure(
                "6 snapshot", f"{workers}, {update.what}: UpdateUsage acknowledged (durable + delta published)",
                with_spread(update.update_seconds, format_seconds), "publish a whole generation in process (above)",
                format_seconds(publish), f"{format_ratio(median(update.update_seconds) / publish)} the publish",
                f"p50 <= {format_seconds(UPDATE_P50_TARGET_S)}", median(update.update_seconds) <= UPDATE_P50_TARGET_S))
            fan_out = median(update.fan_out_seconds)
            result.append(Figure(
                "6 snapshot", f"{workers}, {update.what}: UpdateUsage returned -> every worker decides on it "
                              "(min_generation)",
                with_spread(update.decide_seconds, format_seconds),
                f"same {run.channels} calls, generation already there", format_seconds(fan_out),
                f"{format_ratio(median(update.decide_seconds) / fan_out)} the calls",
                f"p50 <= {format_seconds(UPDATE_P50_TARGET_S)}", median(update.decide_seconds) <= UPDATE_P50_TARGET_S,
                f"median of {len(update.decide_seconds)}, range in brackets"))
        result.append(Figure(
            "6 snapshot", f"{workers}: PSS, supervisor + workers + helpers",
            format_bytes(run.total_pss), "snapshot segment", format_bytes(run.snapshot_bytes),
            f"{format_ratio(run.total_pss / run.snapshot_bytes)} the snapshot", "-", None,
            "workers " + ", ".join(f"{format_bytes(pss)} (private {format_bytes(private)})"
                                   for pss, private in zip(run.worker_pss, run.worker_private))
            + f"; helpers {format_bytes(run.helpers_pss)}; supervisor {format_bytes(run.supervisor_pss)}"))
    by_workers = {run.workers: run for run in propagations}
    if 1 in by_workers and 2 in by_workers:
        # The workers and their helpers alone: the workers are the ones with the snapshot's pages
        # resident (a lone worker's private pages include it), so their PSS sums hold it once
        # whatever their number; the supervisor's own PSS (the fleet as Python objects) drifts by
        # tens of MiB between sidecars and would drown the difference.
        extra = by_workers[2].workers_side_pss - by_workers[1].workers_side_pss
        share = extra / by_workers[2].snapshot_bytes
        result.append(Figure(
            "6 snapshot", "PSS the second worker adds (workers' and helpers' PSS, 2 minus 1)", format_bytes(extra),
            "snapshot segment", format_bytes(by_workers[2].snapshot_bytes), f"{share:.2f} of the snapshot",
            f"< {EXTRA_WORKER_SHARE_TARGET:g} of the snapshot", share < EXTRA_WORKER_SHARE_TARGET))
    return result
