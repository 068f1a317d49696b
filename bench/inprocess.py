"""Section 3: SelectDestinations in process (no gRPC): filter, weigh, pick, alternates.

Measured against the floor it cannot beat, the kernel's full rule-chain scan of
the same fleet (section 1)."""
from __future__ import annotations

from bench import workload
from bench.timing import Figure, format_ratio, format_seconds, median, percentile, sample_calls
from placecheck_engine.decide import select_destinations

MEDIAN_TARGET_S = 1.5e-3  # one instance (issue 12)
INSTANCE_COUNTS = (1, 10)


def measure(hosts: int, min_seconds: float) -> dict[int, list[float]]:
    """Seconds per select_destinations call, by num_instances."""
    columns = workload.columns(hosts)
    profile = workload.profile()
    samples = {}
    for instances in INSTANCE_COUNTS:
        request = workload.request(hosts, instances)
        result = select_destinations(columns, request, profile, "bench", None)
        if len(result.placements) != instances:
            raise RuntimeError(f"the bench request placed {len(result.placements)}/{instances}: "
                               f"{result.summary.message}")
        samples[instances] = sample_calls(lambda: select_destinations(columns, request, profile, "bench", None),
                                          min_seconds=min_seconds, min_calls=20)
    return samples


def figures(samples: dict[int, list[float]], hosts: int, chain_seconds: float) -> list[Figure]:
    result = []
    for instances, seconds in samples.items():
        middle, tail = median(seconds), percentile(seconds, 0.99)
        one = instances == 1
        result.append(Figure(
            "3 select in-process", f"{instances} instance{'s' if instances > 1 else ''}, {hosts:,} hosts, "
                                   f"median (p99 {format_seconds(tail)})",
            format_seconds(middle), "kernel full-chain scan", format_seconds(chain_seconds),
            f"{format_ratio(middle / chain_seconds)} the scan",
            f"median < {format_seconds(MEDIAN_TARGET_S)}" if one else "-",
            middle < MEDIAN_TARGET_S if one else None, f"{len(seconds)} calls"))
    return result
