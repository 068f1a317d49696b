"""Section 9: the fleet state path at scale, through a running sidecar's FleetState service.

- Sustained durable writes from WRITERS concurrent clients, each on its own channel to the state
  service's Unix socket, for a fixed time: UpdateUsage of one random host per call, against a
  bare grpcio echo server on a Unix socket of its own answering the same serialized sizes with
  the same clients; then 500 random hosts per call, in host updates per second.
- CheckDestination p99 from one client while the one-host writers run, against its p99 without.
- ReplaceFleet of the whole fleet over the streaming API (StateClient.replace_fleet_stream),
  end to end: from the first part sent to the acknowledged generation.
- The supervisor's PSS (/proc/<pid>/smaps_rollup) against the snapshot it publishes.
- kill -9 of the supervisor, then a new one on the same state directory: from its start until
  its decision port reports SERVING on the recovered fleet.

The one-host UpdateUsage latencies (acknowledged, then decided on by every worker) are section
6's (bench/snapshot.py), with their targets.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import random
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench import workload
from bench.echo_server import METHOD, echo_request
from bench.grpc_e2e import check_host, echo_server
from bench.timing import Figure, format_bytes, format_ratio, format_seconds, percentile, pss_bytes
from placecheck_engine.snapshot import SnapshotWriter
from placecheck_engine.state import FleetState, HostUsage
from placecheck_engine.store import FleetStore
from placecheck import PlacementClient, StateClient
from placecheck.v1 import state_pb2
from placecheck_server.convert import fleet_to_proto, request_to_proto
from placecheck_server.fleet_builder import FleetBuilder
from placecheck_server.supervisor import WORKER_PRELOAD

WRITERS = 8
BATCH_HOSTS = 500
WRITE_SHARE_TARGET = 0.5  # one host per call: of the echo's calls/s
BATCH_TARGET = 50_000  # host updates/s at BATCH_HOSTS per call
CHECK_P99_TARGET = 1.5  # during the writes, of the p99 without
REPLACE_TARGET_S = 3.0
PSS_TARGET = 1.5  # of the snapshot
RECOVERY_TARGET_S = 5.0
LOCAL_CHANNEL = (("grpc.use_local_subchannel_pool", 1),)  # a connection per client, as separate processes


def _concurrently(make_call: Callable[[int], Callable[[], object]], seconds: float) -> int:
    """Calls completed by WRITERS threads, each calling its own `make_call(index)()` for `seconds`."""
    counts = [0] * WRITERS
    start = threading.Barrier(WRITERS + 1)
    stop = threading.Event()

    def run(index: int) -> None:
        call = make_call(index)
        call()  # connected and warm before the clock starts
        start.wait()
        while not stop.is_set():
            call()
            counts[index] += 1

    threads = [threading.Thread(target=run, args=(index,)) for index in range(WRITERS)]
    for thread in threads:
        thread.start()
    start.wait()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts)


@contextlib.contextmanager
def _writers(state_target: str, names: list[str], hosts_per_call: int) -> Iterator[Callable[[int], Callable]]:
    """make_call(index) for WRITERS clients of their own, each writing random hosts' usage."""
    clients = [StateClient(state_target, LOCAL_CHANNEL) for _ in range(WRITERS)]

    def make_call(index: int) -> Callable[[], object]:
        rng = random.Random(index)
        client = clients[index]

        def call():
            return client.update_usage([state_pb2.HostUsage(name=name, num_instances=rng.randrange(40))
                                        for name in rng.sample(names, hosts_per_call)], timeout=120)
        return call

    try:
        yield make_call
    finally:
        for client in clients:
            client.close()


@dataclass(frozen=True)
class StatePath:
    hosts: int
    seconds: float
    one_host_calls_per_s: float
    echo_calls_per_s: float
    batch_host_updates_per_s: float
    check_p99_alone: float
    check_p99_writing: float
    writes_during_checks_per_s: float
    replace_seconds: float
    supervisor_pss: int
    snapshot_bytes: int
    recovery_seconds: float
    build_seconds: float  # of the replace: converting, validating and encoding in the fleet builder
    supervisor_pss_before_replace: int
    # The state owner's own ceilings, without gRPC: one-host calls/s, and host updates/s at BATCH_HOSTS per call
    in_process_calls_per_s: float
    in_process_batch_host_updates_per_s: float


def _check_p99(decision_target: str, hosts: int, seconds: float) -> float:
    request = request_to_proto(workload.request(hosts))
    with PlacementClient(decision_target, channels=1) as client:
        client.check_destination(request, [check_host(hosts)], timeout=30)
        samples, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            client.check_destination(request, [check_host(hosts)], timeout=30)
            samples.append(time.perf_counter() - started)
    return percentile(samples, 0.99)


def measure(decision_target: str, state_target: str, supervisor_pid: int, hosts: int, seconds: float,
            start_sidecar) -> StatePath:
    names = [host.name for host in workload.fleet(hosts).hosts]
    with _writers(state_target, names, 1) as make_call:
        one_host = _concurrently(make_call, seconds) / seconds
        sample = make_call(0)
        request_bytes = state_pb2.UpdateUsageRequest(
            usages=[state_pb2.HostUsage(name=names[0], num_instances=7)]).ByteSize()
        generation = sample()
        reply_bytes = state_pb2.UpdateUsageResponse(generation=generation, epoch=generation.epoch).ByteSize()

        check_alone = _check_p99(decision_target, hosts, seconds)
        written = []
        background = threading.Thread(target=lambda: written.append(_concurrently(make_call, seconds + 1)))
        background.start()
        time.sleep(0.5)  # the writers are going
        check_writing = _check_p99(decision_target, hosts, seconds)
        background.join()

    with tempfile.TemporaryDirectory(prefix="placecheck-bench-echo-") as directory, \
            echo_server(f"unix:{directory}/echo.sock") as echo_target:
        channels = [grpc.insecure_channel(echo_target, LOCAL_CHANNEL) for _ in range(WRITERS)]
        message = echo_request(request_bytes, reply_bytes)

        def echo_call(index: int) -> Callable[[], object]:
            call = channels[index].unary_unary(METHOD)
            return lambda: call(message, timeout=30)

        try:
            echo = _concurrently(echo_call, seconds) / seconds
        finally:
            for channel in channels:
                channel.close()

    with _writers(state_target, names, BATCH_HOSTS) as make_call:
        batch = _concurrently(make_call, seconds) * BATCH_HOSTS / seconds

    fleet = fleet_to_proto(workload.fleet(hosts))
    pss_before_replace = pss_bytes(supervisor_pid)
    with StateClient(state_target) as state:
        started = time.perf_counter()
        state.replace_fleet_stream(fleet, timeout=600)
        replace_seconds = time.perf_counter() - started
        snapshot_bytes = state.status().snapshot_bytes
    supervisor_pss = pss_bytes(supervisor_pid)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)  # as the supervisor's
    builder = FleetBuilder(context)
    builder.from_request(fleet_to_proto(workload.fleet(1)).SerializeToString(), False, lambda: False)  # the fork server is up
    started = time.perf_counter()
    builder.from_request(fleet.SerializeToString(), False, lambda: False)
    build_seconds = time.perf_counter() - started
    return StatePath(hosts, seconds, one_host, echo, batch, check_alone, check_writing,
                     written[0] / (seconds + 1), replace_seconds, supervisor_pss, snapshot_bytes,
                     measure_recovery(hosts, start_sidecar), build_seconds, pss_before_replace,
                     *_in_process_rates(hosts, seconds))


def _in_process_rates(hosts: int, seconds: float) -> tuple[float, float]:
    """UpdateUsage from WRITERS threads on a FleetState in this process, what the state owner's
    Python allows before any gRPC: calls/s of one host each, host updates/s at BATCH_HOSTS per call."""
    fleet = workload.fleet(hosts)
    names = [host.name for host in fleet.hosts]
    with tempfile.TemporaryDirectory(prefix="placecheck-bench-state-") as directory, \
            contextlib.closing(FleetStore(directory)) as store, \
            SnapshotWriter(f"placecheck-bench-{os.getpid()}") as writer:
        state = FleetState(writer, store)
        state.replace(fleet)

        def writes_of(hosts_per_call: int) -> Callable[[int], Callable[[], object]]:
            def make_call(index: int) -> Callable[[], object]:
                rng = random.Random(index)
                return lambda: state.update_usage([HostUsage(name=name, num_instances=rng.randrange(40))
                                                   for name in rng.sample(names, hosts_per_call)])
            return make_call

        return (_concurrently(writes_of(1), seconds) / seconds,
                _concurrently(writes_of(BATCH_HOSTS), seconds) * BATCH_HOSTS / seconds)


def measure_recovery(hosts: int, start_sidecar) -> float:
    """Seconds from a new supervisor's start to SERVING on the fleet a kill -9'd one acknowledged."""
    with tempfile.TemporaryDirectory(prefix="placecheck-bench-state-") as directory:
        state_dir = Path(directory) / "state"
        first = start_sidecar(workers=2, demo_hosts=hosts, metrics=False, state_dir=state_dir,
                              extra_args=("--orphan-grace", "0"))
        try:
            with StateClient(first.state_target) as state:
                acknowledged = state.update_usage([state_pb2.HostUsage(name=workload.fleet(hosts).hosts[0].name,
                                                                       num_io_ops=3)], timeout=60)
            os.kill(first.pid, signal.SIGKILL)
            first.process.wait()
            started = time.perf_counter()
            with start_sidecar(workers=2, metrics=False, state_dir=state_dir,
                               decision_target=first.decision_target) as second:
                recovery = time.perf_counter() - started
                with StateClient(second.state_target) as state:
                    status = state.status()
                if (status.generation, status.epoch, status.host_count) != (acknowledged, acknowledged.epoch, hosts):
                    raise RuntimeError(f"recovered {status} after acknowledging {acknowledged}")
        finally:
            first.close()
    return recovery


def figures(run: StatePath) -> list[Figure]:
    section = "9 state path"
    hosts = f"{run.hosts:,} hosts"
    one_host_share = run.one_host_calls_per_s / run.echo_calls_per_s
    check_ratio = run.check_p99_writing / run.check_p99_alone
    pss_ratio = run.supervisor_pss / run.snapshot_bytes
    return [
        Figure(section, f"durable UpdateUsage, 1 host per call, {WRITERS} writers, {hosts} (calls/s)",
               f"{run.one_host_calls_per_s:,.0f}", f"bare grpcio echo, same Unix socket kind, {WRITERS} clients",
               f"{run.echo_calls_per_s:,.0f}", f"{one_host_share:.2f} of the echo",
               f">= {WRITE_SHARE_TARGET:g} of the echo", one_host_share >= WRITE_SHARE_TARGET,
               f"{run.seconds:g} s each"),
        Figure(section, f"durable UpdateUsage, {BATCH_HOSTS} hosts per call, {WRITERS} writers, {hosts} "
                        "(host updates/s)",
               f"{run.batch_host_updates_per_s:,.0f}", "1 host per call (above), host updates/s",
               f"{run.one_host_calls_per_s:,.0f}",
               f"{format_ratio(run.batch_host_updates_per_s / run.one_host_calls_per_s)} one per call",
               f">= {BATCH_TARGET:,}", run.batch_host_updates_per_s >= BATCH_TARGET),
        Figure(section, f"CheckDestination p99 while {WRITERS} writers update 1 host per call",
               format_seconds(run.check_p99_writing), "CheckDestination p99 without writes",
               format_seconds(run.check_p99_alone), f"{format_ratio(check_ratio)} without",
               f"<= {CHECK_P99_TARGET:g}x without", check_ratio <= CHECK_P99_TARGET,
               f"{run.writes_during_checks_per_s:,.0f} writes/s meanwhile"),
        Figure(section, f"ReplaceFleet of {hosts} over the streaming API, end to end",
               format_seconds(run.replace_seconds), "-", "-", "-", f"<= {format_seconds(REPLACE_TARGET_S)}",
               run.replace_seconds <= REPLACE_TARGET_S),
        Figure(section, f"of which converting, validating and encoding the fleet in the fleet builder child",
               format_seconds(run.build_seconds), "ReplaceFleet end to end (above)", format_seconds(run.replace_seconds),
               f"{run.build_seconds / run.replace_seconds:.0%} of it", "-", None,
               "the limit: Python's conversion of a Host per host; what would move it: a vectorised proto-to-columns path"),
        Figure(section, f"the state owner's ceiling: one-host UpdateUsage in process (no gRPC), {WRITERS} threads, "
                        f"{hosts} (calls/s)",
               f"{run.in_process_calls_per_s:,.0f}", f"bare grpcio echo, {WRITERS} clients (above)",
               f"{run.echo_calls_per_s:,.0f}", f"{run.in_process_calls_per_s / run.echo_calls_per_s:.2f} of the echo",
               "-", None, "the limit of the one-host figure: Python CPU per write under one GIL (reading the host "
                          "back, the delta, its segment, the log row); what would move it: a compiled usage path"),
        Figure(section, f"the state owner's ceiling: {BATCH_HOSTS} hosts per UpdateUsage in process (no gRPC), "
                        f"{WRITERS} threads, {hosts} (host updates/s)",
               f"{run.in_process_batch_host_updates_per_s:,.0f}", f"over gRPC (above)",
               f"{run.batch_host_updates_per_s:,.0f}",
               f"{format_ratio(run.in_process_batch_host_updates_per_s / run.batch_host_updates_per_s)} over gRPC",
               "-", None, "the limit of the 500-host figure: Python per host (reading it back from the columns, "
                          "its usage, the delta's rows); what would move it: a vectorised usage path"),
        Figure(section, f"supervisor PSS, {hosts}, after the streamed ReplaceFleet",
               format_bytes(run.supervisor_pss), "snapshot it publishes",
               format_bytes(run.snapshot_bytes), f"{format_ratio(pss_ratio)} the snapshot",
               f"<= {PSS_TARGET:g}x the snapshot", pss_ratio <= PSS_TARGET,
               f"{format_bytes(run.supervisor_pss_before_replace)} before it, after the writes above; the limit: no "
               "Host per host is held, but the allocator keeps part of what the writes' and the stream's Python "
               "objects took"),
        Figure(section, f"kill -9 of the supervisor, new one to SERVING on the recovered {hosts}",
               format_seconds(run.recovery_seconds), "-", "-", "-", f"<= {format_seconds(RECOVERY_TARGET_S)}",
               run.recovery_seconds <= RECOVERY_TARGET_S),
    ]
