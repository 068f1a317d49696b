"""Section 8: `placecheck sync openstack` against the real Placement service.

A fleet of N root providers (VCPU, MEMORY_MB, DISK_GB inventories, traits, one of 10 aggregates,
an allocation on half of them) is made through Placement's REST API; then the feeder's full sync
into a real sidecar (time, HTTP calls, the pool used), an incremental poll after 1% of the
providers changed (calls), and the lag from an allocation in Placement to a CheckDestination that
sees it, with the feeder polling at LAG_INTERVAL_S. Skipped when `make placement` has not
installed the service.
"""
from __future__ import annotations

import os
import random
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.timing import Figure, cpu_seconds, descendant_pids, format_seconds

SECTION = "8 OpenStack feed"
CONCURRENCY = 8
POPULATE_THREADS = 8
LAG_INTERVAL_S = 1.0
GOAL_PROVIDERS = 10_000  # the goal: a full sync of this many in a minute
BASELINE_SAMPLE = 100  # providers read one at a time for the sequential baseline
AGGREGATES = [str(uuid.UUID(int=random.Random(f"bench-aggregate{n}").getrandbits(128), version=4))
              for n in range(10)]
TRAITS = ["HW_CPU_X86_AVX2", "HW_CPU_X86_SSE42", "COMPUTE_VOLUME_MULTI_ATTACH"]


@dataclass(frozen=True)
class FeedRun:
    providers: int
    populate_seconds: float
    full_sync_seconds: float
    full_sync_calls: int
    feeder_cpu_seconds: float  # during the full sync: this process, the feeder
    placement_cpu_seconds: float  # during the full sync: gunicorn and its workers
    sequential_seconds_per_provider: float
    changed: int
    poll_seconds: float
    poll_calls: int
    lag_seconds: list[float]


class CountingAdapter:
    """Counts the HTTP requests the feeder makes (the pool's threads share it: a lock)."""

    def __init__(self, adapter):
        self._adapter = adapter
        self._lock = threading.Lock()
        self.requests = 0

    def get(self, *args, **kwargs):
        with self._lock:
            self.requests += 1
        return self._adapter.get(*args, **kwargs)


def _make_provider(placement, number: int, rng: random.Random) -> str:
    provider = placement.post("/resource_providers", {"name": f"bench-{number:05d}"})
    path = f"/resource_providers/{provider['uuid']}"
    generation = placement.put(f"{path}/inventories", {"resource_provider_generation": 0, "inventories": {
        "VCPU": {"total": 32, "allocation_ratio": 4.0, "reserved": 0},
        "MEMORY_MB": {"total": 131072, "allocation_ratio": 1.0, "reserved": 4096},
        "DISK_GB": {"total": 2000, "allocation_ratio": 1.0, "reserved": 0}}})["resource_provider_generation"]
    generation = placement.put(f"{path}/traits", {"resource_provider_generation": generation,
                                                  "traits": rng.sample(TRAITS, 2)})["resource_provider_generation"]
    placement.put(f"{path}/aggregates", {"resource_provider_generation": generation,
                                         "aggregates": [AGGREGATES[number % len(AGGREGATES)]]})
    if number % 2 == 0:
        _allocate(placement, provider["uuid"], {"VCPU": 4, "MEMORY_MB": 8192, "DISK_GB": 40})
    return provider["uuid"]


def _allocate(placement, provider_uuid: str, resources: dict) -> None:
    placement.put(f"/allocations/{uuid.uuid4()}", {
        "allocations": {provider_uuid: {"resources": resources}}, "project_id": "bench", "user_id": "bench",
        "consumer_generation": None, "consumer_type": "INSTANCE"})


def measure(providers: int) -> FeedRun | None:
    # The tests' service helpers import one another as top-level modules, as pytest loads them.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from openstack_services import placement_unavailable_reason, start_placement
    from placecheck import PlacementClient, StateClient
    from placecheck.v1 import placement_pb2
    from placecheck_server.openstack_feed import OpenStackFeed, PlacementReader, run
    from sidecar import start_sidecar

    if placement_unavailable_reason():
        return None
    with start_placement(workers=2) as placement, start_sidecar(wait_serving=False, metrics=False) as sidecar, \
            StateClient(sidecar.state_target) as state, \
            PlacementClient(sidecar.decision_target, channels=1) as client:
        started = time.perf_counter()
        rngs = [random.Random(number) for number in range(providers)]
        with ThreadPoolExecutor(POPULATE_THREADS) as pool:
            uuids = list(pool.map(lambda number: _make_provider(placement, number, rngs[number]), range(providers)))
        populate_seconds = time.perf_counter() - started

        adapter = CountingAdapter(_adapter(placement.endpoint))
        reader = PlacementReader(adapter, CONCURRENCY)
        sequential = PlacementReader(adapter, 1)
        try:
            feed = OpenStackFeed(reader, state)
            placement_pids = [placement.process.pid, *descendant_pids(placement.process.pid)]
            placement_cpu = sum(map(cpu_seconds, placement_pids))
            started, feeder_cpu = time.perf_counter(), time.process_time()
            feed.sync()
            full_sync_seconds, full_sync_calls = time.perf_counter() - started, adapter.requests
            feeder_cpu = time.process_time() - feeder_cpu
            placement_cpu = sum(map(cpu_seconds, placement_pids)) - placement_cpu

            listing = list(sequential.list_roots().values())[:BASELINE_SAMPLE]
            started = time.perf_counter()
            sequential.read_all(listing)
            sequential_seconds = (time.perf_counter() - started) / len(listing)

            changed = max(1, providers // 100)
            for provider_uuid in random.Random(1).sample(uuids, changed):
                _allocate(placement, provider_uuid, {"VCPU": 1, "MEMORY_MB": 1024})
            adapter.requests = 0
            started = time.perf_counter()
            feed.sync()
            poll_seconds, poll_calls = time.perf_counter() - started, adapter.requests

            lags = _lags(placement, client, placement_pb2, feed, run, uuids[1])
        finally:
            reader.close()
            sequential.close()
    return FeedRun(providers, populate_seconds, full_sync_seconds, full_sync_calls, feeder_cpu, placement_cpu,
                   sequential_seconds, changed, poll_seconds, poll_calls, lags)


def _adapter(endpoint: str):
    """A keystoneauth Adapter with the noauth2 token, as server.openstack_feed.connect makes from clouds.yaml."""
    from keystoneauth1.adapter import Adapter
    from keystoneauth1.session import Session, TCPKeepAliveAdapter
    from keystoneauth1.token_endpoint import Token

    from openstack_services import NOAUTH_TOKEN

    session = Session(auth=Token(endpoint, NOAUTH_TOKEN), timeout=30)
    session.session.mount("http://", TCPKeepAliveAdapter(pool_maxsize=CONCURRENCY))
    return Adapter(session=session, service_type="placement")


def _lags(placement, client, placement_pb2, feed, run, provider_uuid: str, repeats: int = 3) -> list[float]:
    """Seconds from an allocation in Placement to a CheckDestination that refuses the host for it,
    with the feeder polling every LAG_INTERVAL_S in a thread."""
    name = placement.get(f"/resource_providers/{provider_uuid}")["name"]
    stop = threading.Event()
    poller = threading.Thread(target=run, args=(feed, LAG_INTERVAL_S, stop), daemon=True)
    poller.start()
    lags = []
    try:
        for _ in range(repeats):
            usage = placement.get(f"/resource_providers/{provider_uuid}/usages")["usages"]["VCPU"]
            free = 32 * 4 - usage
            request = placement_pb2.PlacementRequest(resources={"VCPU": free})
            allocated_at = time.perf_counter()
            _allocate(placement, provider_uuid, {"VCPU": 1})
            while client.check_destination(request, [name], timeout=10).verdicts[0].allowed:
                if time.perf_counter() - allocated_at > 30:
                    raise RuntimeError("the allocation did not reach placecheck within 30 s")
                time.sleep(0.005)
            lags.append(time.perf_counter() - allocated_at)
            time.sleep(random.uniform(0, LAG_INTERVAL_S))  # land the next allocation elsewhere in the cycle
    finally:
        stop.set()
        poller.join()
    return lags


def figures(result: FeedRun | None) -> list[Figure]:
    if result is None:
        return [Figure(SECTION, "full sync", "skipped", "-", "-", "-", "-", None,
                       "openstack-placement is not installed (make placement)")]
    sequential = result.sequential_seconds_per_provider * result.providers
    expected_poll_calls = 1 + 4 * result.changed
    worst_lag = max(result.lag_seconds)
    # Both share this machine's cores: Placement's own CPU per call is what bounds a full sync here.
    cpu_per_provider = (result.feeder_cpu_seconds + result.placement_cpu_seconds) / result.providers
    cores = os.cpu_count() or 1
    projected = result.full_sync_seconds * GOAL_PROVIDERS / result.providers
    return [
        Figure(SECTION, f"full sync of {result.providers:,} providers, {CONCURRENCY} at once",
               format_seconds(result.full_sync_seconds), "one at a time (from a 100-provider sample)",
               format_seconds(sequential), f"{sequential / result.full_sync_seconds:.1f}x faster",
               f"{GOAL_PROVIDERS:,} providers <= 60 s (here, linearly: {format_seconds(projected)})",
               projected <= 60.0,
               f"{result.full_sync_calls:,} HTTP calls; CPU per provider: Placement "
               f"{format_seconds(result.placement_cpu_seconds / result.providers)}, feeder "
               f"{format_seconds(result.feeder_cpu_seconds / result.providers)}, so {GOAL_PROVIDERS:,} providers need at "
               f"least {format_seconds(GOAL_PROVIDERS * cpu_per_provider / cores)} on these {cores} cores; populating "
               f"Placement took {format_seconds(result.populate_seconds)}"),
        Figure(SECTION, f"poll, {result.changed:,} of {result.providers:,} providers changed",
               f"{result.poll_calls:,} calls", "full sync", f"{result.full_sync_calls:,} calls",
               f"{result.full_sync_calls / result.poll_calls:.0f}x fewer",
               f"1 + 4 x changed = {expected_poll_calls:,}", result.poll_calls == expected_poll_calls,
               f"took {format_seconds(result.poll_seconds)}"),
        Figure(SECTION, "allocation in Placement to a decision that sees it (worst of "
                        f"{len(result.lag_seconds)})", format_seconds(worst_lag), "poll interval",
               format_seconds(LAG_INTERVAL_S), f"{worst_lag / LAG_INTERVAL_S:.2f}x",
               "<= interval + 1 s", worst_lag <= LAG_INTERVAL_S + 1.0,
               ", ".join(format_seconds(lag) for lag in result.lag_seconds)),
    ]
