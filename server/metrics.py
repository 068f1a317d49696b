"""Prometheus metrics: per-worker decision counters, summed by the supervisor.

prometheus_client's multiprocess mode: every worker writes its values to
files in PROMETHEUS_MULTIPROC_DIR (which must be set before prometheus_client
is first imported in that process), and the supervisor's HTTP endpoint sums
them. The snapshot gauges are computed by the supervisor at scrape time.
Labels are bounded: rpc, outcome, rule; never a host or a workload.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# From 50 us: a CheckDestination's kernel work is far below the RPC's own cost.
DURATION_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2,
                    0.1, 0.25, 0.5, 1.0, 2.5)


class DecisionMetrics:
    """A worker's counters; created in the worker, after PROMETHEUS_MULTIPROC_DIR is set."""

    def __init__(self):
        assert os.environ.get(MULTIPROC_DIR_ENV), "decision metrics need multiprocess mode"
        from prometheus_client import Counter, Histogram

        # registry=None: values live in the multiprocess files, read by the supervisor.
        self.decisions = Counter("placecheck_decisions", "Decisions answered, by RPC and outcome.",
                                 ["rpc", "outcome"], registry=None)
        self.rejections = Counter("placecheck_rejections",
                                  "Hosts refused, per rule (a host refused by two rules counts for both).",
                                  ["rpc", "rule"], registry=None)
        self.duration = Histogram("placecheck_request_duration_seconds", "Time to answer a decision RPC.",
                                  ["rpc"], buckets=DURATION_BUCKETS, registry=None)

        # Children bound once per label set: .labels() costs a lock, str() of every value and a
        # dict lookup, more than the mmap'd write each update does.
        self._children: dict[tuple, object] = {}

    def _child(self, metric, *labels: str):
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[metric, labels] = metric.labels(*labels)
        return child

    def record(self, rpc: str, outcome: str, seconds: float, rejections: dict[str, int]) -> None:
        self._child(self.decisions, rpc, outcome).inc()
        for rule, hosts in rejections.items():
            if hosts:
                self._child(self.rejections, rpc, rule).inc(hosts)
        self._child(self.duration, rpc).observe(seconds)


def mark_worker_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


@dataclass(frozen=True)
class SnapshotFigures:
    generation: int  # 0: no fleet yet
    age_seconds: float  # since the last write
    hosts: int
    not_serving_reason: str  # "" when the fleet is ready; else one of NOT_SERVING_REASONS


# Why health reports NOT_SERVING: no write yet, or none for longer than --max-snapshot-age.
NOT_SERVING_REASONS = ("no_fleet", "stale")


class SnapshotCollector:
    """The snapshot gauges, read from the state owner whenever Prometheus scrapes."""

    def __init__(self, figures: Callable[[], SnapshotFigures]):
        self._figures = figures

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        figures = self._figures()
        yield GaugeMetricFamily("placecheck_ready", "1 when the fleet is ready to decide on (health SERVING), else 0.",
                                value=0 if figures.not_serving_reason else 1)
        reasons = GaugeMetricFamily("placecheck_not_ready", "1 for the reason health reports NOT_SERVING.",
                                    labels=["reason"])
        for reason in NOT_SERVING_REASONS:
            reasons.add_metric([reason], 1 if figures.not_serving_reason == reason else 0)
        yield reasons
        if not figures.generation:
            return
        yield GaugeMetricFamily("placecheck_snapshot_generation", "Generation of the published fleet snapshot.",
                                value=figures.generation)
        yield GaugeMetricFamily("placecheck_snapshot_age_seconds",
                                "Seconds since the last write the snapshot includes.",
                                value=figures.age_seconds)
        yield GaugeMetricFamily("placecheck_snapshot_hosts", "Hosts in the published snapshot.",
                                value=figures.hosts)


def serve_metrics(host: str, port: int, figures: Callable[[], SnapshotFigures]):
    """Start the HTTP endpoint summing every worker's files; returns the HTTP server to shut down."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(SnapshotCollector(figures))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
