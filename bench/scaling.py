"""Section 5: calls/s with 1 and with 2 workers under closed-loop load, and the
workers' CPU seconds per call from /proc/<pid>/stat.

Several client processes each send CheckDestination back to back over their own
connection (SO_REUSEPORT spreads connections over the workers). The clients send
the request pre-serialized and take the reply as bytes, so that their own CPU,
which shares this machine with the workers, stays small.
"""
from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass

import grpc

from bench import workload
from bench.grpc_e2e import check_host
from bench.timing import Figure, cpu_seconds, format_ratio, format_seconds
from placecheck.v1 import placement_pb2
from server.convert import request_to_proto

CHECK_METHOD = "/placecheck.v1.PlacementCheck/CheckDestination"
CLIENT_PROCESSES = 4
WARMUP_S = 0.3
CLIENT_START_TIMEOUT_S = 60.0
CPU_PER_CALL_TOLERANCE = 0.10
THROUGHPUT_TARGET = 1.4


def _closed_loop_client(target: str, message: bytes, ready: multiprocessing.Queue, measuring,
                        stop, results: multiprocessing.Queue) -> None:
    """Call back to back until `stop`; report how many calls completed while `measuring`."""
    counted = 0
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        check = channel.unary_unary(CHECK_METHOD)
        check(message)
        ready.put(True)
        while not stop.is_set():
            check(message)
            counted += measuring.is_set()
    results.put(counted)


@dataclass(frozen=True)
class Load:
    workers: int
    calls: int
    seconds: float
    worker_cpu_seconds: float

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_per_call(self) -> float:
        return self.worker_cpu_seconds / self.calls

    def __add__(self, other: "Load") -> "Load":
        return Load(self.workers, self.calls + other.calls, self.seconds + other.seconds,
                    self.worker_cpu_seconds + other.worker_cpu_seconds)


def _load_block(decision_target: str, worker_pids: list[int], message: bytes, seconds: float) -> Load:
    context = multiprocessing.get_context("spawn")  # no gRPC state crosses a fork
    ready, results = context.Queue(), context.Queue()
    measuring, stop = context.Event(), context.Event()
    clients = [context.Process(target=_closed_loop_client,
                               args=(decision_target, message, ready, measuring, stop, results))
               for _ in range(CLIENT_PROCESSES)]
    for client in clients:
        client.start()
    for _ in clients:
        ready.get(timeout=CLIENT_START_TIMEOUT_S)
    time.sleep(WARMUP_S)  # every client connected and calling: let the load settle
    cpu_before = sum(cpu_seconds(pid) for pid in worker_pids)
    measuring.set()
    measured_from = time.perf_counter()
    time.sleep(seconds)
    cpu_after = sum(cpu_seconds(pid) for pid in worker_pids)
    measured_to = time.perf_counter()
    stop.set()
    calls = sum(results.get(timeout=CLIENT_START_TIMEOUT_S) for _ in clients)
    for client in clients:
        client.join()
    return Load(len(worker_pids), calls, measured_to - measured_from, cpu_after - cpu_before)


def measure(sidecars: dict[int, tuple[str, list[int]]], hosts: int, seconds: float,
            blocks: int) -> dict[int, Load]:
    """Load per sidecar (workers -> (decision target, worker pids)), `seconds` each, measured in
    alternating blocks so that other load on the machine weighs on every sidecar alike."""
    request = request_to_proto(workload.request(hosts))
    message = placement_pb2.CheckDestinationRequest(request=request, hosts=[check_host(hosts)]).SerializeToString()
    loads: dict[int, Load] = {}
    for _ in range(blocks):
        for workers, (target, worker_pids) in sidecars.items():
            block = _load_block(target, worker_pids, message, seconds / blocks)
            loads[workers] = loads[workers] + block if workers in loads else block
    return loads


def figures(one: Load, two: Load) -> list[Figure]:
    speedup = two.calls_per_second / one.calls_per_second
    cpu_change = two.cpu_per_call / one.cpu_per_call - 1
    return [
        Figure("5 scaling", f"CheckDestination calls/s, 2 workers, {CLIENT_PROCESSES} closed-loop clients",
               f"{two.calls_per_second:,.0f} calls/s", "1 worker", f"{one.calls_per_second:,.0f} calls/s",
               f"{format_ratio(speedup)} of 1 worker", f">= {THROUGHPUT_TARGET:g}x", speedup >= THROUGHPUT_TARGET),
        Figure("5 scaling", "workers' CPU per call, 2 workers", format_seconds(two.cpu_per_call),
               "1 worker", format_seconds(one.cpu_per_call), f"{format_ratio(1 + cpu_change)} of 1 worker",
               f"within {CPU_PER_CALL_TOLERANCE:.0%}", abs(cpu_change) <= CPU_PER_CALL_TOLERANCE),
    ]
