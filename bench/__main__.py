"""`make bench`: every figure against a baseline measured in the same run.

    python -m bench [--quick] [--output PATH]

Prints one table (and writes it, with the machine, to bench/results.md unless
--quick). --quick runs every section on small sizes, for the smoke test; it runs
the Nova comparison only when bench/.venv-nova is already installed.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench import (bandwidth, grpc_e2e, inprocess, kernel, nova_compare, numa_pci, openstack_feed, scaling,
                   snapshot, stages, state_path, workload)
from bench.timing import Figure, machine_description, render_table

RESULTS = Path(__file__).resolve().parent / "results.md"


@dataclass(frozen=True)
class Sizes:
    kernel_hosts: tuple[int, ...]
    nova_hosts: int
    nova_repeats: int
    install_nova: bool
    select_hosts: int  # one of kernel_hosts: the kernel's scan there is the in-process baseline
    server_hosts: int
    min_seconds: float  # per timed figure in process
    reference_seconds: float
    e2e_seconds: float
    scaling_block_seconds: float  # per sidecar and round
    scaling_rounds: int
    propagation_repeats: int
    publish_repeats: int
    copy_bytes: int
    feed_providers: int  # resource providers in the real Placement the OpenStack feeder syncs
    state_path_seconds: float  # per sustained-write and CheckDestination-p99 figure
    numa_pci_hosts: int  # the NUMA/PCI fleet placecheck scans
    numa_pci_nova_hosts: int  # its first hosts, which Nova's two filters run on


FULL = Sizes(kernel_hosts=(1_000, 10_000, 100_000), nova_hosts=10_000, nova_repeats=3, install_nova=True,
             select_hosts=100_000, server_hosts=100_000, min_seconds=0.5, reference_seconds=2.0,
             e2e_seconds=6.0, scaling_block_seconds=1.5, scaling_rounds=7, propagation_repeats=21, publish_repeats=5,
             copy_bytes=256 << 20, feed_providers=1_000, state_path_seconds=5.0, numa_pci_hosts=100_000,
             numa_pci_nova_hosts=2_000)
QUICK = Sizes(kernel_hosts=(1_000, 2_000), nova_hosts=1_000, nova_repeats=1, install_nova=False,
              select_hosts=2_000, server_hosts=2_000, min_seconds=0.02, reference_seconds=0.1,
              e2e_seconds=0.6, scaling_block_seconds=0.2, scaling_rounds=3, propagation_repeats=3, publish_repeats=2,
              copy_bytes=16 << 20, feed_providers=50, state_path_seconds=0.5, numa_pci_hosts=2_000,
              numa_pci_nova_hosts=200)


def progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def run(sizes: Sizes) -> list[Figure]:
    # Server sections import tests' sidecar helper: the real `placecheck serve` on free ports.
    from tests.sidecar import free_port_range, start_sidecar

    figures: list[Figure] = []
    progress(f"1 kernel vs reference at {', '.join(f'{n:,}' for n in sizes.kernel_hosts)} hosts")
    kernel_runs = [kernel.measure(hosts, sizes.min_seconds, sizes.reference_seconds)
                   for hosts in sizes.kernel_hosts]
    figures += kernel.figures(kernel_runs)
    largest = max(kernel_runs, key=lambda run_: run_.hosts)

    python = nova_compare.nova_python(install=sizes.install_nova)
    if python is None:
        progress("2 Nova: skipped, bench/.venv-nova is not installed (make bench installs it)")
    else:
        progress(f"2 Nova's filters and weighers at {sizes.nova_hosts:,} hosts")
        figures += nova_compare.figures(
            nova_compare.measure(python, sizes.nova_hosts, sizes.nova_repeats, sizes.min_seconds))

    progress(f"3 SelectDestinations in process at {sizes.select_hosts:,} hosts")
    chain_seconds = next(run_.chain_seconds for run_ in kernel_runs if run_.hosts == sizes.select_hosts)
    figures += inprocess.figures(inprocess.measure(sizes.select_hosts, sizes.min_seconds),
                                 sizes.select_hosts, chain_seconds)

    progress(f"10 NUMATopologyFilter + PciPassthroughFilter at {sizes.numa_pci_hosts:,} NUMA/PCI hosts"
             + ("" if python is None else f", Nova's on {sizes.numa_pci_nova_hosts:,} of them"))
    figures += numa_pci.figures(numa_pci.measure(python, sizes.numa_pci_hosts, sizes.numa_pci_nova_hosts,
                                                 sizes.nova_repeats, sizes.min_seconds))

    progress("7 bandwidth (measured now: the servers below would share the memory bus)")
    copy_traffic = bandwidth.copy_bandwidth(sizes.copy_bytes, runs=5)
    bandwidth_figures = bandwidth.figures(bandwidth.columns_read(largest.hosts), largest.hosts,
                                          len(largest.actives), largest.chain_seconds, copy_traffic)
    publish_seconds, segment_bytes = snapshot.measure_publish(sizes.server_hosts, sizes.publish_repeats)

    with contextlib.ExitStack() as running:
        sidecars, worker_ports = {}, {}
        for workers in (1, 2):
            progress(f"starting the sidecar: {workers} worker(s) of {workload.THREADS_PER_WORKER} threads, "
                     f"{sizes.server_hosts:,} demo hosts")
            worker_ports[workers] = free_port_range(workers)  # each worker's own port, to reach every worker
            sidecars[workers] = running.enter_context(
                start_sidecar(workers=workers, demo_hosts=sizes.server_hosts, metrics=True,
                              extra_args=("--threads-per-worker", str(workload.THREADS_PER_WORKER),
                                          "--worker-ports", str(worker_ports[workers]))))
        worker_pids = {workers: sidecar.worker_pids() for workers, sidecar in sidecars.items()}
        progress("4 gRPC end to end against the echo server, 1 worker, and each stage in process")
        end_to_end = grpc_e2e.measure(sidecars[1].decision_target, sidecars[1].metrics_url, sizes.server_hosts,
                                      sizes.e2e_seconds)
        figures += grpc_e2e.figures(end_to_end, sizes.server_hosts)
        figures += stages.figures(stages.measure(sizes.server_hosts), end_to_end, sizes.server_hosts)
        progress(f"5 closed-loop load, 1 and 2 workers in turn, {sizes.scaling_rounds} rounds")
        loads = scaling.measure({workers: (sidecar.decision_target, worker_pids[workers])
                                 for workers, sidecar in sidecars.items()}, sizes.server_hosts,
                                sizes.scaling_block_seconds, sizes.scaling_rounds)
        progress("6 snapshot propagation and memory, 1 and 2 workers")
        propagations = [snapshot.measure_propagation([f"127.0.0.1:{worker_ports[workers] + index}"
                                                      for index in range(workers)],
                                                     sidecar.state_target, sidecar.pid,
                                                     worker_pids[workers], sizes.server_hosts,
                                                     sizes.propagation_repeats)
                        for workers, sidecar in sidecars.items()]
        progress(f"9 state path: sustained writes, ReplaceFleet stream, kill -9 recovery, {sizes.server_hosts:,} hosts")
        state_run = state_path.measure(sidecars[2].decision_target, sidecars[2].state_target, sidecars[2].pid,
                                       sizes.server_hosts, sizes.state_path_seconds, start_sidecar)
    figures += scaling.figures(loads, sizes.scaling_block_seconds)
    figures += snapshot.figures(publish_seconds, segment_bytes, sizes.server_hosts, copy_traffic, propagations)
    figures += bandwidth_figures
    figures += state_path.figures(state_run)

    progress(f"8 OpenStack feed: {sizes.feed_providers:,} providers in a real Placement")
    figures += openstack_feed.figures(openstack_feed.measure(sizes.feed_providers))
    return figures


def report(figures: list[Figure], quick: bool, elapsed: float, load_before: float, load_after: float) -> str:
    met = sum(figure.met is True for figure in figures)
    targets = sum(figure.met is not None for figure in figures)
    return "\n".join([
        "# placecheck benchmark" + (" (--quick)" if quick else ""),
        "",
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} on {machine_description()}; "
        f"`make bench` took {elapsed:.0f} s. Every baseline was measured in the same run. "
        f"1-minute load average {load_before:.1f} before, {load_after:.1f} after. "
        f"Sidecars ran with --threads-per-worker {workload.THREADS_PER_WORKER}, the echo server with as many.",
        "",
        render_table(figures),
        "",
        f"{met} of {targets} targets met.",
        "",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--output", type=Path, help=f"write the table here (default: {RESULTS}, none with --quick)")
    args = parser.parse_args()
    started, load_before = time.monotonic(), os.getloadavg()[0]
    figures = run(QUICK if args.quick else FULL)
    text = report(figures, args.quick, time.monotonic() - started, load_before, os.getloadavg()[0])
    print(text)
    output = args.output or (None if args.quick else RESULTS)
    if output is not None:
        output.write_text(text)
        progress(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
