"""Prometheus metrics: per-process counters in multiprocess mode, summed by the supervisor.

prometheus_client's multiprocess mode: every process (the workers and the supervisor itself)
writes its values to files in PROMETHEUS_MULTIPROC_DIR, which must be set before
prometheus_client is first imported in that process, and the supervisor's HTTP endpoint sums
them. The snapshot gauges, the last reload's result and build info are computed by the
supervisor at scrape time. Labels are bounded: rpc, service, code, outcome, rule, kind,
reason; never a host, a caller or a workload.
"""
from __future__ import annotations

import logging
import os
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import grpc

log = logging.getLogger(__name__)

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# From 50 us: a CheckDestination's kernel work is far below the RPC's own cost.
DURATION_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2,
                    0.1, 0.25, 0.5, 1.0, 2.5)
# Writes and publishes: a usage delta takes about a millisecond, a 100,000-host base seconds.
WRITE_BUCKETS = (5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# grpcio refuses a call past its server's maximum_concurrent_rpcs before any handler runs.
SHED_CODE = grpc.StatusCode.RESOURCE_EXHAUSTED.name


def multiprocess_metric(kind: str, *args, **kwargs):
    """A metric whose values live in this process's multiprocess files (registry=None: the
    supervisor's MultiProcessCollector reads them)."""
    assert os.environ.get(MULTIPROC_DIR_ENV), "metrics need multiprocess mode"
    import prometheus_client

    return getattr(prometheus_client, kind)(*args, registry=None, **kwargs)


# The updates a call made through after_response, on an AfterResponseExecutor thread.
_after_response = threading.local()


def after_response(update: Callable[[], None]) -> None:
    """Run `update` (a metric update) once the current call has sent its response, when the call
    runs on an AfterResponseExecutor's thread; otherwise now."""
    pending = getattr(_after_response, "pending", None)
    if pending is None:
        update()
    else:
        pending.append(update)


class AfterResponseExecutor(ThreadPoolExecutor):
    """A gRPC server's handler threads. grpcio's work item for a call returns once the response is
    handed to the transport, so the call's metric updates are made after it, while the response
    travels, instead of while the caller waits (about 10 us a decision, three times that under
    load): a scrape sees a call counted microseconds after its caller has the answer."""

    def submit(self, fn, /, *args, **kwargs):
        return super().submit(_then_update_metrics, fn, args, kwargs)


def _then_update_metrics(fn, args, kwargs):
    _after_response.pending = pending = []
    try:
        return fn(*args, **kwargs)
    finally:
        _after_response.pending = None
        for update in pending:
            try:
                update()
            except Exception:  # the call is answered: a failed count must not hide the others
                log.exception("a metric update after a call failed")


def handler_kind(handler) -> str:
    """unary_unary, unary_stream, stream_unary or stream_stream: the RpcMethodHandler's behaviour."""
    return ("unary_unary" if not handler.request_streaming and not handler.response_streaming else
            "unary_stream" if not handler.request_streaming else
            "stream_unary" if not handler.response_streaming else "stream_stream")


class _BoundChildren:
    """Children bound once per label set: .labels() costs a lock, str() of every value and a
    dict lookup, more than the mmap'd write each update does."""

    def __init__(self):
        self._children: dict[tuple, object] = {}

    def child(self, metric, *labels: str):
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[metric, labels] = metric.labels(*labels)
        return child


# Created at 0 when a worker starts: Prometheus sees a counter's first increase only when the
# series existed before it (a series born at 2,000 after a burst has a rate of 0).
DECISION_OUTCOMES = {"CheckDestination": ("allowed", "refused"), "SelectDestinations": ("placed", "no_fit")}
ZERO_CODES = ("OK", SHED_CODE)


class DecisionMetrics(_BoundChildren):
    """A worker's decision counters; created in the worker, after PROMETHEUS_MULTIPROC_DIR is set.

    CheckDestination's refusals and SelectDestinations' eliminations are separate families: a
    select scan eliminates most of the fleet by design, which says nothing of refused calls."""

    def __init__(self):
        super().__init__()
        self.decisions = multiprocess_metric("Counter", "placecheck_decisions",
                                             "Decisions answered, by RPC and outcome.", ["rpc", "outcome"])
        self.check_refusals = multiprocess_metric(
            "Counter", "placecheck_check_refusals",
            "CheckDestination: hosts refused, per refusing rule (a host refused by two rules counts for both).",
            ["rule"])
        self.select_eliminations = multiprocess_metric(
            "Counter", "placecheck_select_eliminations",
            "SelectDestinations: hosts eliminated per rule, summed over every scan of every call.", ["rule"])
        self.duration = multiprocess_metric("Histogram", "placecheck_request_duration_seconds",
                                            "Time to answer a decision RPC.", ["rpc"], buckets=DURATION_BUCKETS)
        self._per_rule = {"CheckDestination": self.check_refusals, "SelectDestinations": self.select_eliminations}
        for rpc, outcomes in DECISION_OUTCOMES.items():
            for outcome in outcomes:
                self.child(self.decisions, rpc, outcome)

    def record(self, rpc: str, outcome: str, seconds: float, hosts_per_rule: dict[str, int]) -> None:
        self.child(self.decisions, rpc, outcome).inc()
        per_rule = self._per_rule[rpc]
        for rule, hosts in hosts_per_rule.items():
            if hosts:
                self.child(per_rule, rule).inc(hosts)
        self.child(self.duration, rpc).observe(seconds)


class CallMetrics(grpc.ServerInterceptor, _BoundChildren):
    """Every call of a gRPC server by service, method and status code, shed load included.

    grpcio refuses a call past `maximum_concurrent_rpcs` with RESOURCE_EXHAUSTED without running
    any handler, but only after it has run the interceptors (to find the method's handler), in
    its polling thread under the server's lock, with the limit already decided on. So the
    interceptor tells a shed call by the same test on the same state (`watch` hands it the
    server), counts it, and lets grpcio refuse it. With `timed`, also how long handlers take
    (the state server's writes; the decision RPCs have placecheck_request_duration_seconds)."""

    def __init__(self, timed: bool = False, services=(), worker: int | None = None):
        """`services`: ServiceDescriptors whose methods' started and OK/shed counts start at 0.
        `worker`: a decision worker's index, whose calls are counted apart too (SO_REUSEPORT
        spreads connections, not calls: a caller holding one connection loads one worker)."""
        _BoundChildren.__init__(self)
        self.started = multiprocess_metric("Counter", "placecheck_grpc_server_started",
                                           "gRPC calls received, by service and method.", ["service", "rpc"])
        self.handled = multiprocess_metric(
            "Counter", "placecheck_grpc_server_handled",
            "gRPC calls completed, by service, method and status code (load shed by the concurrency limit "
            "included, as RESOURCE_EXHAUSTED).", ["service", "rpc", "code"])
        self.handling = multiprocess_metric(
            "Histogram", "placecheck_grpc_server_handling_seconds", "Time from a call's handler start to its end.",
            ["service", "rpc"], buckets=WRITE_BUCKETS) if timed else None
        self._worker_calls = None if worker is None else multiprocess_metric(
            "Counter", "placecheck_worker_calls", "Calls received by each decision worker.", ["worker"]
        ).labels(str(worker))
        self._server_state = None
        self._methods: dict[str, _CountedMethod] = {}  # by method path; grpcio's poll thread writes it
        for service in services:
            for method in service.methods:
                self.child(self.started, service.full_name, method.name)
                for code in ZERO_CODES:
                    self.child(self.handled, service.full_name, method.name, code)

    def watch(self, server: grpc.Server) -> None:
        """Read `server`'s concurrency limit (grpcio's private state: tests/test_metrics.py checks
        the count against the refusals callers see)."""
        self._server_state = server._state  # noqa: SLF001

    def _shed_now(self) -> bool:
        state = self._server_state
        return (state is not None and state.maximum_concurrent_rpcs is not None
                and state.active_rpc_count >= state.maximum_concurrent_rpcs)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:  # grpcio answers UNIMPLEMENTED; the method name is the caller's string
            self.child(self.handled, "unknown", "unknown", grpc.StatusCode.UNIMPLEMENTED.name).inc()
            return None
        method = self._methods.get(handler_call_details.method)
        if method is None or method.handler is not handler:  # a method's first call (or new handler)
            method = self._methods[handler_call_details.method] = self._counting(
                handler, handler_call_details.method)
        method.started.inc()
        if self._worker_calls is not None:
            self._worker_calls.inc()
        if self._shed_now():
            method.handled(SHED_CODE).inc()
            return handler
        return method.counted

    def _counting(self, handler, method_path: str) -> "_CountedMethod":
        """`handler` wrapped, once per method, to count each call's end by its status code."""
        service, _, rpc = method_path.lstrip("/").rpartition("/")
        method = _CountedMethod(handler, self.child(self.started, service, rpc),
                                lambda code: self.child(self.handled, service, rpc, code),
                                self.child(self.handling, service, rpc) if self.handling is not None else None)

        def answer(behaviour):
            def counted(request, context):
                started, failed = time.perf_counter(), True
                try:
                    response = behaviour(request, context)
                    failed = False
                    return response
                finally:
                    method.finished(context, started, failed)
            return counted

        def stream(behaviour):
            def counted(request, context):
                started, failed = time.perf_counter(), True
                try:
                    yield from behaviour(request, context)
                    failed = False
                except GeneratorExit:  # the caller went away mid-stream
                    context.set_code(grpc.StatusCode.CANCELLED)
                    raise
                finally:
                    method.finished(context, started, failed)
            return counted

        kind = handler_kind(handler)
        wrap = stream if handler.response_streaming else answer
        method.counted = getattr(grpc, f"{kind}_rpc_method_handler")(
            wrap(getattr(handler, kind)), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
        return method


@dataclass
class _CountedMethod:
    """One method's counters and its handler wrapped to count (made at its first call)."""

    handler: object  # the servicer's handler the wrapper calls
    started: object  # placecheck_grpc_server_started's child
    handled: Callable[[str], object]  # placecheck_grpc_server_handled's child for a code's name
    handling: object | None  # placecheck_grpc_server_handling_seconds' child, when timed
    counted: object = None

    def finished(self, context, started: float, failed: bool) -> None:
        code = context.code()
        name = code.name if isinstance(code, grpc.StatusCode) else ("UNKNOWN" if failed else "OK")
        seconds = time.perf_counter() - started
        after_response(lambda: self._count_end(name, seconds))

    def _count_end(self, code_name: str, seconds: float) -> None:
        self.handled(code_name).inc()
        if self.handling is not None:
            self.handling.observe(seconds)


class TimedPublisher:
    """A SnapshotWriter whose publishes are counted and timed (the state owner publishes
    through it: a base after a replace or a big change, a delta after a usage update)."""

    def __init__(self, writer):
        self._writer = writer
        self._duration = multiprocess_metric(
            "Histogram", "placecheck_snapshot_publish_duration_seconds",
            "Time to publish a fleet snapshot to the workers, by kind (base or usage delta).", ["kind"],
            buckets=WRITE_BUCKETS)

    def __getattr__(self, name):  # current, base, prefix...: the writer's own
        return getattr(self._writer, name)

    def publish(self, *args, **kwargs):
        with self._duration.labels("base").time():
            return self._writer.publish(*args, **kwargs)

    def publish_delta(self, *args, **kwargs):
        with self._duration.labels("delta").time():
            return self._writer.publish_delta(*args, **kwargs)


class SupervisorMetrics:
    """Worker restarts and configuration reloads, counted by the supervisor."""

    RESTART_REASONS = ("exited", "lost_fork_server", "start_failed")

    def __init__(self):
        self.worker_restarts = multiprocess_metric(
            "Counter", "placecheck_worker_restarts",
            "Decision workers started again, by why: it exited, its fork server died, or its start failed.",
            ["reason"])
        self.config_reloads = multiprocess_metric("Counter", "placecheck_config_reloads",
                                                  "SIGHUP reloads of --config, by outcome (ok, failed).",
                                                  ["outcome"])
        for reason in self.RESTART_REASONS:  # zero from the start, so increase() sees the first one
            self.worker_restarts.labels(reason)
        for outcome in ("ok", "failed"):
            self.config_reloads.labels(outcome)
        self.last_reload_ok = True

    def reloaded(self, ok: bool) -> None:
        self.last_reload_ok = ok
        self.config_reloads.labels("ok" if ok else "failed").inc()


def mark_worker_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


def placecheck_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("placecheck")
    except metadata.PackageNotFoundError:
        return "unknown"


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


class SupervisorCollector:
    """Build info and the last reload's result, at scrape time."""

    def __init__(self, supervisor_metrics: SupervisorMetrics):
        self._metrics = supervisor_metrics
        self._build = {"version": placecheck_version(), "python_version": platform.python_version(),
                       "grpcio_version": grpc.__version__}

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        build = GaugeMetricFamily("placecheck_build_info", "1, labelled with the running build.",
                                  labels=list(self._build))
        build.add_metric(list(self._build.values()), 1)
        yield build
        yield GaugeMetricFamily("placecheck_config_last_reload_successful",
                                "1 unless the last SIGHUP reload was refused (the previous configuration stays).",
                                value=1 if self._metrics.last_reload_ok else 0)


def serve_metrics(host: str, port: int, figures: Callable[[], SnapshotFigures], supervisor_metrics: SupervisorMetrics):
    """Start the HTTP endpoint summing every process's files; returns the HTTP server to shut down."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(SnapshotCollector(figures))
    registry.register(SupervisorCollector(supervisor_metrics))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
