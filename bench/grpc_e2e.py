"""Section 4: CheckDestination and SelectDestinations end to end over gRPC on loopback,
one client, one call at a time, against a bare grpcio echo server (bench/echo_server.py,
started here) answering messages of the same serialized sizes.

placecheck's calls go through the real client (PlacementClient, protobuf both ways);
the echo's through a raw bytes channel. Both are timed in alternating blocks, so
drift on a noisy machine hits both alike.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

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


def alternating(first: Callable[[], object], second: Callable[[], object],
                seconds: float) -> tuple[list[float], list[float]]:
    """Per-call seconds of two calls, measured in alternating blocks after a warm-up."""
    for _ in range(WARMUP_CALLS):
        first()
        second()
    first_samples, second_samples = [], []
    for _ in range(BLOCKS):
        first_samples += sample_calls(first, min_seconds=seconds / BLOCKS / 2, min_calls=20)
        second_samples += sample_calls(second, min_seconds=seconds / BLOCKS / 2, min_calls=20)
    return first_samples, second_samples


def check_host(hosts: int) -> str:
    """The host CheckDestination asks about: one from the middle of the fleet."""
    return workload.fleet(hosts).hosts[hosts // 2].name


def measure(decision_target: str, hosts: int, seconds: float) -> list[Comparison]:
    request = request_to_proto(workload.request(hosts))
    check_message = placement_pb2.CheckDestinationRequest(request=request, hosts=[check_host(hosts)])
    select_message = placement_pb2.SelectDestinationsRequest(request=request)
    comparisons = []
    with PlacementClient(decision_target, channels=1) as client, echo_server() as echo_target, \
            grpc.insecure_channel(echo_target) as echo_channel:
        echo = echo_channel.unary_unary(METHOD)
        for name, message, call in (
                ("CheckDestination", check_message,
                 lambda: client.check_destination(request, check_message.hosts)),
                ("SelectDestinations", select_message, lambda: client.select_destinations(request))):
            reply_bytes = call().ByteSize()
            echo_message = echo_request(message.ByteSize(), reply_bytes)
            placecheck, baseline = alternating(call, lambda: echo(echo_message), seconds)
            comparisons.append(Comparison(name, message.ByteSize(), reply_bytes,
                                          Latencies(placecheck), Latencies(baseline)))
    return comparisons


def figures(comparisons: list[Comparison], hosts: int) -> list[Figure]:
    targets = {"CheckDestination": CHECK_P50_TARGET, "SelectDestinations": SELECT_P50_TARGET}
    result = []
    for comparison in comparisons:
        ratio = comparison.placecheck.p50 / comparison.echo.p50
        target = targets[comparison.name]
        result.append(Figure(
            "4 gRPC end to end", f"{comparison.name}, {hosts:,} hosts, 1 client",
            comparison.placecheck.describe(), "bare grpcio echo, same sizes", comparison.echo.describe(),
            f"{format_ratio(ratio)} echo (p50)", f"p50 <= {target:g}x echo", ratio <= target,
            f"request {comparison.request_bytes} B, reply {comparison.reply_bytes} B"))
    return result
