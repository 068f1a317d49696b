"""Section 4: CheckDestination and SelectDestinations end to end over gRPC on loopback,
one client, one call at a time, against a bare grpcio echo server (bench/echo_server.py,
started here) answering messages of the same serialized sizes.

placecheck's calls go through the real client (PlacementClient, protobuf both ways);
the echo's through a raw bytes channel. Beside them, in the same alternating blocks (so
drift on a noisy machine hits all alike), the sidecar's own floor: a grpc.health.v1
Check on the same worker, through the same server, interceptors and threads with a
trivial handler. And the decision handler's own time inside the worker, from the
worker's placecheck_request_duration_seconds over the same calls: the time a stage
takes there (caches shared with grpcio's threads, the caller's process between calls)
is larger than in a warm loop (bench/stages.py).
"""
from __future__ import annotations

import contextlib
import re
import subprocess
import urllib.request
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import workload
from bench.echo_server import METHOD, echo_request
from bench.timing import Figure, format_ratio, format_seconds, median, percentile, sample_calls
from placecheck import PlacementClient
from placecheck.v1 import placement_pb2
from placecheck_server.convert import request_to_proto

REPO = Path(__file__).resolve().parent.parent
CHECK_P50_TARGET = 1.2
SELECT_P50_TARGET = 3.0
WARMUP_CALLS = 50
BLOCKS = 3  # alternating placecheck / echo blocks per comparison


@contextlib.contextmanager
def echo_server(listen: str | None = None) -> Iterator[str]:
    """The echo server in its own process, with as many threads as a placecheck worker, on
    `listen` (a unix socket, say) or else a free loopback port; yields its target."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.echo_server", "--threads", str(workload.THREADS_PER_WORKER),
         *(("--listen", listen) if listen else ())],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        yield listen or f"127.0.0.1:{port}"
    finally:
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class Latencies:
    samples: list[float]

    @property
    def p50(self) -> float:
        return median(self.samples)

    @property
    def p99(self) -> float:
        return percentile(self.samples, 0.99)

    @property
    def calls_per_second(self) -> float:
        return len(self.samples) / sum(self.samples)

    def describe(self) -> str:
        return f"p50 {format_seconds(self.p50)}, p99 {format_seconds(self.p99)}, {self.calls_per_second:,.0f} calls/s"


@dataclass(frozen=True)
class Comparison:
    name: str
    request_bytes: int
    reply_bytes: int
    placecheck: Latencies
    echo: Latencies
    sidecar_floor: Latencies  # health Check on the same sidecar
    handler_seconds: float  # mean time in the worker's decision handler over the placecheck calls


def alternating(calls: list[Callable[[], object]], seconds: float) -> list[list[float]]:
    """Per-call seconds of each call, measured in alternating blocks after a warm-up."""
    for _ in range(WARMUP_CALLS):
        for call in calls:
            call()
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(BLOCKS):
        for call, into in zip(calls, samples):
            into += sample_calls(call, min_seconds=seconds / BLOCKS / len(calls), min_calls=20)
    return samples


def handler_totals(metrics_url: str, rpc: str) -> tuple[float, float]:
    """(seconds, calls) the workers' decision handler spent on `rpc` so far."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    totals = []
    for suffix in ("sum", "count"):
        match = re.search(rf'^placecheck_request_duration_seconds_{suffix}{{rpc="{rpc}"}} (\S+)$', text, re.M)
        totals.append(float(match.group(1)) if match else 0.0)
    return totals[0], totals[1]


def check_host(hosts: int) -> str:
    """The host CheckDestination asks about: one from the middle of the fleet."""
    return workload.fleet(hosts).hosts[hosts // 2].name


def measure(decision_target: str, metrics_url: str, hosts: int, seconds: float) -> list[Comparison]:
    request = request_to_proto(workload.request(hosts))
    check_message = placement_pb2.CheckDestinationRequest(request=request, hosts=[check_host(hosts)])
    select_message = placement_pb2.SelectDestinationsRequest(request=request)
    comparisons = []
    with PlacementClient(decision_target, channels=1) as client, echo_server() as echo_target, \
            grpc.insecure_channel(echo_target) as echo_channel, \
            grpc.insecure_channel(decision_target) as health_channel:
        echo = echo_channel.unary_unary(METHOD)
        health = health_pb2_grpc.HealthStub(health_channel).Check
        health_request = health_pb2.HealthCheckRequest()
        for name, message, call in (
                ("CheckDestination", check_message,
                 lambda: client.check_destination(request, check_message.hosts)),
                ("SelectDestinations", select_message, lambda: client.select_destinations(request))):
            reply_bytes = call().ByteSize()
            echo_message = echo_request(message.ByteSize(), reply_bytes)
            before = handler_totals(metrics_url, name)
            placecheck, baseline, floor = alternating(
                [call, lambda: echo(echo_message), lambda: health(health_request)], seconds)
            after = handler_totals(metrics_url, name)
            handler_seconds = (after[0] - before[0]) / max(1.0, after[1] - before[1])
            comparisons.append(Comparison(name, message.ByteSize(), reply_bytes, Latencies(placecheck),
                                          Latencies(baseline), Latencies(floor), handler_seconds))
    return comparisons


def _limit(comparison: Comparison, target: float) -> str:
    """What holds a missed end-to-end figure back, from this run's split of the call."""
    echo, floor, handler = comparison.echo.p50, comparison.sidecar_floor.p50, comparison.handler_seconds
    split = (f"the limit: the sidecar's own floor (health Check, same worker) is {format_ratio(floor / echo)} "
             f"the echo, leaving {format_seconds(max(0.0, target * echo - floor))} of the target for a decision, "
             f"and the handler takes {format_seconds(handler)} inside the worker")
    if comparison.name == "CheckDestination":
        return (f"{split}, several times its warm-loop stages (section 4 stages): cold caches after grpcio's "
                "two thread hand-offs per call, which the floor and the echo pay too; what would move it: "
                "a decision front without grpcio's per-call thread hand-offs")
    return (f"{split}: memory passes over every host, the scan's read-modify-write of 8 bytes per host "
            "per rule and the weighing's gathers (section 4 stages); what would move it: a refusal bitmap "
            "per rule, weigher columns stored host by host")


def figures(comparisons: list[Comparison], hosts: int) -> list[Figure]:
    targets = {"CheckDestination": CHECK_P50_TARGET, "SelectDestinations": SELECT_P50_TARGET}
    result = []
    for comparison in comparisons:
        ratio = comparison.placecheck.p50 / comparison.echo.p50
        target = targets[comparison.name]
        note = f"request {comparison.request_bytes} B, reply {comparison.reply_bytes} B"
        if ratio > target:
            note += f"; {_limit(comparison, target)}"
        result.append(Figure(
            "4 gRPC end to end", f"{comparison.name}, {hosts:,} hosts, 1 client",
            comparison.placecheck.describe(), "bare grpcio echo, same sizes", comparison.echo.describe(),
            f"{format_ratio(ratio)} echo (p50)", f"p50 <= {target:g}x echo", ratio <= target, note))
    for comparison in comparisons:
        echo = comparison.echo.p50
        floor, handler = comparison.sidecar_floor.p50, comparison.handler_seconds
        for part, seconds in (
                ("the sidecar's own floor: health Check p50 on the same worker (same server, interceptors, "
                 "threads; trivial handler)", floor),
                ("the decision handler inside the worker (mean over the same calls, the worker's "
                 "placecheck_request_duration_seconds)", handler),
                ("the rest: end-to-end p50 less the floor and the handler", comparison.placecheck.p50 - floor - handler)):
            result.append(Figure(
                "4 where the time goes", f"{comparison.name}, {hosts:,} hosts: {part}", format_seconds(seconds),
                "bare grpcio echo p50, same blocks", format_seconds(echo), f"{format_ratio(seconds / echo)} echo",
                "-", None))
    return result
