"""Prometheus metrics of the OpenStack feeder (`placecheck sync openstack`).

The feeder is its own process, apart from the sidecar, so it serves its own endpoint
(--metrics-port). Labels are bounded: sync kind, outcome, error kind; never a host or a provider.
"""
from __future__ import annotations

import math
import time

# Why a sync failed (placecheck_feed_errors_total's `kind`).
ERROR_KINDS = (
    "placement_unreachable",  # no connection to Placement (or to Keystone for a token), or a timeout
    "placement_error",  # Placement (or Keystone) answered with an error
    "nova_unreachable",  # likewise for Nova
    "nova_error",
    "placecheck_unavailable",  # the sidecar's state service did not answer
    "placecheck_refused",  # the sidecar refused a write
    "aggregate_id_collision",  # two Placement aggregates with one placecheck id
)
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class FeedMetrics:
    """The feeder's metrics, in a registry of their own (so several feeders may share a process)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.polls = Counter("placecheck_feed_polls", "Syncs from Placement, by kind (full or incremental) "
                             "and outcome (ok or error).", ["sync", "outcome"], registry=self.registry)
        self.errors = Counter("placecheck_feed_errors", "Failed syncs, by why.", ["kind"], registry=self.registry)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        self.api_requests = Counter("placecheck_feed_api_requests", "HTTP requests made, by service "
                                    "(placement, nova).", ["service"], registry=self.registry)
        self.providers_read = Counter("placecheck_feed_providers_read",
                                      "Resource providers read in full (inventories, usages, traits, "
                                      "aggregates).", registry=self.registry)
        self.duration = Histogram("placecheck_feed_poll_duration_seconds",
                                  "Time for one sync: Placement's reads and placecheck's writes.", ["sync"],
                                  buckets=POLL_BUCKETS, registry=self.registry)
        self.hosts = Gauge("placecheck_feed_hosts", "Hosts the feeder keeps in placecheck (Placement's root "
                           "providers).", registry=self.registry)
        self.last_success = Gauge("placecheck_feed_last_success_timestamp_seconds",
                                  "Unix time the last successful sync finished; 0 before the first.",
                                  registry=self.registry)
        self.up = Gauge("placecheck_feed_up", "1 when the last sync succeeded, else 0.", registry=self.registry)
        self._last_listing = math.nan
        lag = Gauge("placecheck_feed_sync_lag_seconds",
                    "Age of the Placement view placecheck holds: seconds since the provider list of the "
                    "last successful sync was read (+Inf before the first).", registry=self.registry)
        lag.set_function(self._lag)

    def _lag(self) -> float:
        return math.inf if math.isnan(self._last_listing) else max(0.0, time.time() - self._last_listing)

    def succeeded(self, sync: str, listed_at: float, seconds: float, hosts: int) -> None:
        """A sync finished; `listed_at` is the Unix time its provider list was read."""
        self.polls.labels(sync, "ok").inc()
        self.duration.labels(sync).observe(seconds)
        self.hosts.set(hosts)
        self._last_listing = listed_at
        self.last_success.set(time.time())
        self.up.set(1)

    def failed(self, sync: str, kind: str) -> None:
        self.polls.labels(sync, "error").inc()
        self.errors.labels(kind).inc()
        self.up.set(0)


def serve_feed_metrics(host: str, port: int, metrics: FeedMetrics):
    """Start the feeder's HTTP endpoint; returns the server to shut down."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
