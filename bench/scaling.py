"""Section 5: calls/s with 1 and with 2 workers under closed-loop load, and the
workers' CPU seconds per call from /proc/<pid>/stat.

Both sidecars run at the same load per worker: CLIENTS_PER_WORKER client processes
per worker, each sending CheckDestination back to back over one connection that
the worker it was given holds (SO_REUSEPORT picks the worker per connection, so a
client reconnects until /proc/net/tcp shows its connection on that worker). A
worker thus has the same calls in flight with 1 or with 2 workers; what differs is
only the second worker and its clients competing for the machine. The clients
send the request pre-serialized and take the reply as bytes, so that their own
CPU, which shares this machine with the workers, stays small.

The clients stay connected throughout and the sidecars are loaded in turn, in
short blocks ordered 1 2, 2 1, 1 2, ... (one round: a block of each), so that
drift in other load on the machine weighs on both alike. Figures are medians over
blocks with their range; ratios are medians of each round's ratio, with theirs.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass

import grpc

from bench import workload
from bench.grpc_e2e import check_host
from bench.timing import Figure, cpu_seconds, format_ratio, format_seconds, median, with_spread, \
    workers_connected_to_us
from placecheck.v1 import placement_pb2
from placecheck_server.convert import request_to_proto

CHECK_METHOD = "/placecheck.v1.PlacementCheck/CheckDestination"
CLIENTS_PER_WORKER = 2
WARMUP_S = 0.2  # per block: the clients are connected and warm, the load only has to settle
CLIENT_START_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 30.0
MIN_BLOCK_CALLS = 20
MAX_CONNECT_ATTEMPTS = 32  # each lands on the wanted one of 2 workers with probability 1/2
DISCONNECT_TIMEOUT_S = 2.0
CLIENT_STOP_TIMEOUT_S = 10.0
CPU_PER_CALL_TOLERANCE = 0.10
THROUGHPUT_TARGET = 1.4


def _connect_to_worker(target: str, worker_pid: int, worker_pids: list[int],
                       message: bytes) -> tuple[grpc.Channel, grpc.UnaryUnaryMultiCallable]:
    """A channel whose one connection `worker_pid` holds, with its CheckDestination call."""
    port = int(target.rsplit(":", 1)[1])
    for attempt in range(MAX_CONNECT_ATTEMPTS):
        channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1),
                                                         ("grpc.channel_id", attempt)])
        check = channel.unary_unary(CHECK_METHOD)
        check(message, timeout=CALL_TIMEOUT_S)
        if workers_connected_to_us(worker_pids, port) == {worker_pid}:
            return channel, check
        channel.close()
        # The next attempt is judged by this process's connections alone: let this one go first.
        deadline = time.monotonic() + DISCONNECT_TIMEOUT_S
        while workers_connected_to_us(worker_pids, port) and time.monotonic() < deadline:
            time.sleep(0.01)
    raise RuntimeError(f"{MAX_CONNECT_ATTEMPTS} connections did not reach worker {worker_pid}")


def _closed_loop_client(target: str, worker_pid: int, worker_pids: list[int], message: bytes,
                        ready: multiprocessing.Queue, running, stop, calls) -> None:
    """Call `worker_pid` back to back while `running` is set, counting completed calls in
    `calls`, until `stop`."""
    channel, check = _connect_to_worker(target, worker_pid, worker_pids, message)
    with channel:
        ready.put(worker_pid)
        while True:
            running.wait()
            if stop.is_set():
                break
            check(message, timeout=CALL_TIMEOUT_S)
            calls.value += 1


@dataclass
class _Clients:
    """One sidecar's client processes and the switch that sets them calling."""
    worker_pids: list[int]
    running: object  # multiprocessing Event
    calls: list  # one shared counter per client
    processes: list[multiprocessing.Process]

    def calls_so_far(self) -> int:
        return sum(counter.value for counter in self.calls)


@dataclass(frozen=True)
class Block:
    calls: int
    seconds: float
    worker_cpu_seconds: float
    client_cpu_seconds: float  # the clients share the machine: what they take, the workers cannot

    @property
    def busy_cores(self) -> tuple[float, float]:
        """Cores the workers and the clients kept busy on average: (workers, clients)."""
        return self.worker_cpu_seconds / self.seconds, self.client_cpu_seconds / self.seconds

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds

    @property
    def cpu_per_call(self) -> float:
        return self.worker_cpu_seconds / self.calls


def _load_block(clients: _Clients, seconds: float) -> Block:
    clients.running.set()
    time.sleep(WARMUP_S)
    cpu_before = sum(cpu_seconds(pid) for pid in clients.worker_pids)
    client_cpu_before = sum(cpu_seconds(process.pid) for process in clients.processes)
    calls_before = clients.calls_so_far()
    measured_from = time.perf_counter()
    time.sleep(seconds)
    # A stall (the machine is shared) must not leave a block without calls to divide by.
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while clients.calls_so_far() - calls_before < MIN_BLOCK_CALLS and time.monotonic() < deadline:
        time.sleep(0.01)
    calls_after = clients.calls_so_far()
    cpu_after = sum(cpu_seconds(pid) for pid in clients.worker_pids)
    client_cpu_after = sum(cpu_seconds(process.pid) for process in clients.processes)
    measured_to = time.perf_counter()
    clients.running.clear()
    return Block(calls_after - calls_before, measured_to - measured_from, cpu_after - cpu_before,
                 client_cpu_after - client_cpu_before)


def measure(sidecars: dict[int, tuple[str, list[int]]], hosts: int, block_seconds: float,
            rounds: int) -> dict[int, list[Block]]:
    """Blocks per sidecar (workers -> (decision target, worker pids)), `rounds` each."""
    request = request_to_proto(workload.request(hosts))
    message = placement_pb2.CheckDestinationRequest(request=request, hosts=[check_host(hosts)]).SerializeToString()
    context = multiprocessing.get_context("spawn")  # no gRPC state crosses a fork
    ready, stop = context.Queue(), context.Event()
    pools: dict[int, _Clients] = {}
    try:
        for workers, (target, worker_pids) in sidecars.items():
            pool = pools[workers] = _Clients(worker_pids, context.Event(), [], [])
            for worker_pid in worker_pids:
                for _ in range(CLIENTS_PER_WORKER):
                    pool.calls.append(context.RawValue("q", 0))
                    pool.processes.append(context.Process(target=_closed_loop_client, args=(
                        target, worker_pid, worker_pids, message, ready, pool.running, stop, pool.calls[-1])))
                    pool.processes[-1].start()
        for _ in range(sum(len(pool.processes) for pool in pools.values())):
            ready.get(timeout=CLIENT_START_TIMEOUT_S)
        blocks: dict[int, list[Block]] = {workers: [] for workers in sidecars}
        for round_ in range(rounds):
            for workers in list(sidecars)[::-1 if round_ % 2 else 1]:
                blocks[workers].append(_load_block(pools[workers], block_seconds))
    finally:
        stop.set()
        for pool in pools.values():
            pool.running.set()
            for process in pool.processes:
                process.join(CLIENT_STOP_TIMEOUT_S)
                if process.is_alive():
                    process.terminate()
                    process.join()
    return blocks


def figures(blocks: dict[int, list[Block]], block_seconds: float) -> list[Figure]:
    one, two = blocks[1], blocks[2]
    speedups = [second.calls_per_second / first.calls_per_second for first, second in zip(one, two)]
    cpu_ratios = [second.cpu_per_call / first.cpu_per_call for first, second in zip(one, two)]
    speedup, cpu_ratio = median(speedups), median(cpu_ratios)

    def calls_per_second(blocks_: list[Block]) -> str:
        return with_spread([block.calls_per_second for block in blocks_], "{:,.0f}".format) + " calls/s"

    def ratio(ratios: list[float]) -> str:
        return f"{format_ratio(median(ratios))} of 1 worker ({format_ratio(min(ratios))} to " \
               f"{format_ratio(max(ratios))})"

    def busy(blocks_: list[Block]) -> str:
        workers = median([block.busy_cores[0] for block in blocks_])
        clients = median([block.busy_cores[1] for block in blocks_])
        return f"workers {workers:.2f} + clients {clients:.2f}"

    machine = (f"cores busy (median), 1 worker: {busy(one)}; 2 workers: {busy(two)}; "
               f"of {os.cpu_count()} cores")
    # With the clients on the same cores, a second worker can only take what they leave.
    limit = ("; the limit: the clients share the workers' cores (above); what would move it: "
             "the clients on cores or machines of their own")

    return [
        Figure("5 scaling", f"CheckDestination calls/s, 2 workers, {CLIENTS_PER_WORKER} closed-loop clients "
                            "per worker", calls_per_second(two),
               "1 worker, as many clients per worker",
               calls_per_second(one), ratio(speedups),
               f">= {THROUGHPUT_TARGET:g}x", speedup >= THROUGHPUT_TARGET,
               f"median of {len(one)} alternating {block_seconds:g} s blocks each, range in brackets; {machine}"
               + ("" if speedup >= THROUGHPUT_TARGET else limit)),
        Figure("5 scaling", "workers' CPU per call, 2 workers",
               with_spread([block.cpu_per_call for block in two], format_seconds), "1 worker",
               with_spread([block.cpu_per_call for block in one], format_seconds), ratio(cpu_ratios),
               f"within {CPU_PER_CALL_TOLERANCE:.0%}", abs(cpu_ratio - 1) <= CPU_PER_CALL_TOLERANCE,
               machine + ("" if abs(cpu_ratio - 1) <= CPU_PER_CALL_TOLERANCE else limit)),
    ]
