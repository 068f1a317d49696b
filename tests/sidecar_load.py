"""Load for the metrics tests: bursts of decision calls, and a parsed /metrics scrape."""
from __future__ import annotations

import collections
import urllib.request

import grpc
from prometheus_client.parser import text_string_to_metric_families

from placecheck.v1 import placement_pb2, placement_pb2_grpc

# grpcio's words when maximum_concurrent_rpcs refuses a call before any handler runs.
SHED_DETAILS = "Concurrent RPC limit exceeded!"
TIMEOUT_S = 10.0


def select_request() -> placement_pb2.SelectDestinationsRequest:
    return placement_pb2.SelectDestinationsRequest(request=placement_pb2.PlacementRequest(
        resources={"VCPU": 2, "MEMORY_MB": 4_096, "DISK_GB": 20}))


def burst(target: str, calls: int, channels: int = 4) -> collections.Counter:
    """`calls` SelectDestinations sent at once; how they ended, by status code name (and
    "shed" for those grpcio refused at its concurrency limit)."""
    outcomes: collections.Counter = collections.Counter()
    opened = [grpc.insecure_channel(target) for _ in range(channels)]
    try:
        stubs = [placement_pb2_grpc.PlacementCheckStub(channel) for channel in opened]
        futures = [stubs[index % channels].SelectDestinations.future(select_request(), timeout=60)
                   for index in range(calls)]
        for future in futures:
            code = future.code()
            outcomes[code.name] += 1
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED and future.details() == SHED_DETAILS:
                outcomes["shed"] += 1
    finally:
        for channel in opened:
            channel.close()
    return outcomes


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample: (name, sorted label pairs) -> value."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
        text = reply.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
