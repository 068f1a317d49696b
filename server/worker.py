"""A decision worker: one process serving placecheck.v1.PlacementCheck.

Every worker binds the same decision address with SO_REUSEPORT (the kernel
spreads connections across them) and, with --worker-ports, an address of its
own (a caller holding one connection balances calls over those), reads the fleet through a SnapshotReader,
and serves grpc.health.v1 (NOT_SERVING until the first snapshot is attached,
while the last write is older than --max-snapshot-age, and from the moment it
is told to stop) and server reflection.

A worker whose supervisor dies keeps answering from its last snapshot for
--orphan-grace seconds (each answer then carries the snapshot's age in the
trailing metadata `placecheck-snapshot-age-seconds`), then stops.

On SIGHUP it reloads its configuration file (the supervisor's validated copy of
the operator's file) and swaps its Config whole: a call reads the Config once,
so it finishes on the configuration it started with.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import threading
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from placecheck_engine import decide
from placecheck_engine.config import Config, ConfigError, default_config, load_config
from placecheck_engine.model import InvalidField
from placecheck_engine.snapshot import Snapshot, SnapshotError, SnapshotReader
from placecheck_engine.verdict import CheckResult
from placecheck.v1 import placement_pb2, placement_pb2_grpc
from placecheck_server import convert
from placecheck_server.errors import EpochMismatch, GenerationNotReached, NotFound, SnapshotUnavailable, rpc_status_for
from placecheck_server.handlers import add_unary_servicer
from placecheck_server.json_logs import DecisionLog, DecisionLogSettings
from placecheck_server.metrics import AfterResponseExecutor, CallMetrics, DecisionMetrics, after_response, mark_worker_dead
from placecheck_server.security import AccessPolicy, AuthInterceptor, TlsMaterial
from placecheck_server.proctitle import set_process_title
from placecheck_server.standard_services import HealthServicer, add_reflection

log = logging.getLogger(__name__)

PLACEMENT_SERVICE = placement_pb2.DESCRIPTOR.services_by_name["PlacementCheck"].full_name
# Answer FAILED_PRECONDITION this much before the caller's deadline, so the caller sees it.
DEADLINE_MARGIN_S = 0.05
# A wait for a generation looks at the worker's shutdown this often.
WAIT_SLICE_S = 0.1
# Between announcing NOT_SERVING and refusing new calls, so health pollers see the change.
NOT_SERVING_NOTICE_S = 0.25
# How often a worker looks at its snapshot's presence and age for its health.
READINESS_POLL_S = 0.2
# How often an orphaned worker logs the age of the snapshot it still answers from.
ORPHAN_LOG_EVERY_S = 5.0
SNAPSHOT_AGE_METADATA = "placecheck-snapshot-age-seconds"
# Calls in flight per handler thread before new ones are refused with RESOURCE_EXHAUSTED: at
# about half a millisecond a call, the last one admitted waits some 64 ms for its thread.
MAX_CALLS_PER_THREAD = 128
# glibc mallopt parameters, and the sizes set with them (see keep_freed_memory_for_reuse).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_BYTES = 16 << 20
TRIM_THRESHOLD_BYTES = 32 << 20


@dataclass(frozen=True)
class RequestLimits:
    """What one call may cost a worker (`placecheck serve --max-*`); past a limit the call is
    refused with the field, or for waits FAILED_PRECONDITION, before it costs anything."""

    max_instances: int = 1000  # SelectDestinations' num_instances (a pick and a rescan each)
    max_check_hosts: int = 1000  # CheckDestination's hosts (a one-row scan and explanation each)
    # A min_generation not reached this soon (or by the caller's deadline, if sooner) is
    # FAILED_PRECONDITION: a write is published before it is acknowledged, so a generation
    # that has not appeared by then is not coming soon.
    max_generation_wait_s: float = 2.0
    # Calls of one worker waiting for a generation at once; more are FAILED_PRECONDITION at
    # once, so waiting callers never hold every handler thread (None: one fewer than threads).
    max_waiting_calls: int | None = None

    def waiting_calls(self, threads: int) -> int:
        return self.max_waiting_calls if self.max_waiting_calls is not None else max(1, threads - 1)

    def check(self, request, hosts=()) -> None:
        if request.num_instances > self.max_instances:
            raise InvalidField("request.num_instances", f"at most {self.max_instances} (--max-instances)")
        if len(hosts) > self.max_check_hosts:
            raise InvalidField("hosts", f"at most {self.max_check_hosts} hosts (--max-check-hosts)")


@dataclass(frozen=True)
class WorkerSettings:
    index: int
    listen: str  # the decision address every worker shares (SO_REUSEPORT)
    snapshot_prefix: str
    config_path: str | None  # read at start and again on every SIGHUP
    threads: int
    grace_s: float
    log_level: str
    max_snapshot_age_s: float | None = None  # NOT_SERVING when the last write is older; None: no limit
    orphan_grace_s: float = 0.0  # answering on after the supervisor died
    snapshot_verify_interval_s: float = 10.0  # how often the current snapshot's checksum is verified again
    limits: RequestLimits = RequestLimits()
    tls: TlsMaterial | None = None  # None: plaintext
    access: AccessPolicy | None = None  # None: every caller is served
    decision_log: DecisionLogSettings | None = None  # None: decisions are not logged
    # This worker's own decision address as well (--worker-ports), for callers that balance
    # calls over the workers themselves; None: the shared address only.
    own_listen: str | None = None


def configure_logging(level: str, role: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format=f"%(asctime)s {role}[%(process)d] %(levelname)s %(name)s: %(message)s")


def new_decision_id() -> str:
    """128 random bits as 32 hex digits: uuid4().hex's shape at a quarter of its cost."""
    return secrets.token_hex(16)


class PlacementServicer(placement_pb2_grpc.PlacementCheckServicer):
    """Both decision RPCs: convert, pick the snapshot, decide, convert back, count.

    `config` is replaced whole on reload; each call reads it once, so its profile
    and the revision its response names come from the same configuration."""

    def __init__(self, reader: SnapshotReader, config: Config, metrics: DecisionMetrics, limits: RequestLimits,
                 threads: int, stopping: threading.Event):
        self._reader = reader
        self.config = config
        self._metrics = metrics
        self._limits = limits
        self._waiting = threading.BoundedSemaphore(limits.waiting_calls(threads))
        self._stopping = stopping  # set at shutdown: waits end at once
        self.orphaned = False  # set once the supervisor is gone: answers then report the snapshot's age

    def CheckDestination(self, message: placement_pb2.CheckDestinationRequest, context):
        def decide_check():
            config = self.config
            request = convert.request_from_proto_reused(message.request)
            hosts = convert.check_hosts_from_proto(message)
            self._limits.check(request, hosts)
            profile = config.profile(request.profile)
            snapshot = self._snapshot(message.min_generation, message.expected_epoch, context)
            try:
                result = decide.check_destination(snapshot.columns, request, profile, hosts)
            except decide.UnknownHost as error:
                raise NotFound("host", error.host, f"hosts[{hosts.index(error.host)}]") from error
            response = convert.check_response(result, generation=snapshot.generation,
                                              decision_id=new_decision_id(),
                                              config_revision=config.revision)
            response.epoch = snapshot.epoch
            outcome = "allowed" if all(v.allowed for v in result.verdicts) else "refused"
            return response, outcome, lambda: refusals_per_rule(result)

        return self._answer("CheckDestination", context, decide_check)

    def SelectDestinations(self, message: placement_pb2.SelectDestinationsRequest, context):
        def decide_select():
            config = self.config
            request = convert.request_from_proto_reused(message.request)
            self._limits.check(request)
            profile = config.profile(request.profile)
            max_alternates = convert.max_alternates_from_proto(message)
            snapshot = self._snapshot(message.min_generation, message.expected_epoch, context)
            decision_id = message.decision_id or new_decision_id()
            result = decide.select_destinations(snapshot.columns, request, profile, decision_id, max_alternates)
            response = convert.select_response(result, generation=snapshot.generation, decision_id=decision_id,
                                               config_revision=config.revision)
            response.epoch = snapshot.epoch
            outcome = "placed" if result.placements else "no_fit"
            return response, outcome, lambda: dict(result.summary.eliminations)

        return self._answer("SelectDestinations", context, decide_select)

    def _answer(self, rpc: str, context, decide_call):
        """decide_call's response; it also returns the outcome and a function giving the hosts per
        refusing rule, which the metrics call once the response is sent."""
        started = time.perf_counter()
        try:
            response, outcome, hosts_per_rule = decide_call()
        except Exception as error:  # every failure becomes a status; none may end the worker
            outcome, status = rpc_status_for(error)
            seconds = time.perf_counter() - started
            after_response(lambda: self._metrics.record(rpc, outcome, seconds, {}))
            context.abort_with_status(status)
        seconds = time.perf_counter() - started
        after_response(lambda: self._metrics.record(rpc, outcome, seconds, hosts_per_rule()))
        return response

    def _snapshot(self, min_generation: int, expected_epoch: str, context) -> Snapshot:
        snapshot = self._reader.current()
        if expected_epoch and snapshot is not None and snapshot.epoch != expected_epoch:
            raise EpochMismatch(expected_epoch, snapshot.epoch)  # no generation of this history will do
        if min_generation and (snapshot is None or snapshot.generation < min_generation):
            snapshot = self._wait_for(min_generation, context)
            if snapshot is None or snapshot.generation < min_generation:
                raise GenerationNotReached(min_generation, snapshot.generation if snapshot else 0)
        if snapshot is None:
            raise SnapshotUnavailable()
        if expected_epoch and snapshot.epoch != expected_epoch:
            raise EpochMismatch(expected_epoch, snapshot.epoch)
        if self.orphaned:
            context.set_trailing_metadata(((SNAPSHOT_AGE_METADATA, f"{snapshot_age(snapshot):.3f}"),))
        return snapshot


    def _wait_for(self, min_generation: int, context) -> Snapshot | None:
        """The snapshot once it reaches min_generation, or the current one when the wait is
        over: at the limit, before the caller's deadline, at shutdown, or at once when as many
        calls as allowed are waiting already."""
        wait_s = self._limits.max_generation_wait_s
        remaining = context.time_remaining()
        if remaining is not None:
            wait_s = min(wait_s, max(0.0, remaining - min(DEADLINE_MARGIN_S, remaining / 5)))
        if not self._waiting.acquire(blocking=False):
            return self._reader.current()
        try:
            deadline = time.monotonic() + wait_s
            while not self._stopping.is_set():
                left = deadline - time.monotonic()
                snapshot = self._reader.wait_for(min_generation, max(0.0, min(left, WAIT_SLICE_S)))
                if snapshot is not None or left <= WAIT_SLICE_S:
                    return snapshot or self._reader.current()
            return self._reader.current()
        finally:
            self._waiting.release()


def refusals_per_rule(result: CheckResult) -> dict[str, int]:
    """How many of the checked hosts each rule refused."""
    refusals: dict[str, int] = {}
    for verdict in result.verdicts:
        for rejection in verdict.rejections:
            refusals[rejection.rule] = refusals.get(rejection.rule, 0) + 1
    return refusals


def snapshot_age(snapshot: Snapshot) -> float:
    """Seconds since the last write the snapshot includes."""
    return max(0.0, time.time() - snapshot.written_at)


class Worker:
    def __init__(self, settings: WorkerSettings, stopping: threading.Event, reload_requested: threading.Event):
        self.settings = settings
        self.stopping = stopping
        self.reload_requested = reload_requested
        self.reader = SnapshotReader(settings.snapshot_prefix)
        config = load_config(settings.config_path) if settings.config_path else default_config()
        self.health = HealthServicer()
        for service in ("", PLACEMENT_SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        call_metrics = CallMetrics(services=[placement_pb2.DESCRIPTOR.services_by_name["PlacementCheck"]],
                                   worker=settings.index)
        self.server = grpc.server(AfterResponseExecutor(max_workers=settings.threads,
                                                        thread_name_prefix="decision"),
                                  options=[("grpc.so_reuseport", 1)],
                                  maximum_concurrent_rpcs=MAX_CALLS_PER_THREAD * settings.threads,
                                  # First: it counts every call, those refused by the others too.
                                  interceptors=[call_metrics]
                                  + ([AuthInterceptor(settings.access)] if settings.access else [])
                                  + ([DecisionLog(settings.decision_log)] if settings.decision_log else []))
        call_metrics.watch(self.server)
        self.placement = PlacementServicer(self.reader, config, DecisionMetrics(), settings.limits,
                                           settings.threads, stopping)
        add_unary_servicer(self.server, self.placement, placement_pb2.DESCRIPTOR.services_by_name["PlacementCheck"])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        add_reflection(self.server, (PLACEMENT_SERVICE,))
        for address in filter(None, (settings.listen, settings.own_listen)):
            port = (self.server.add_secure_port(address, settings.tls.server_credentials()) if settings.tls
                    else self.server.add_insecure_port(address))
            if port == 0:
                raise OSError(f"cannot bind the decision address {address}")

    def serve(self) -> None:
        self.server.start()
        threading.Thread(target=self._follow_readiness, name="readiness", daemon=True).start()
        threading.Thread(target=self._stop_with_parent, name="parent-watch", daemon=True).start()
        if self.settings.config_path:
            threading.Thread(target=self._reload_when_asked, name="reload", daemon=True).start()
        log.info("worker %d serving %s on config revision %s", self.settings.index,
                 " and ".join(filter(None, (self.settings.listen, self.settings.own_listen))),
                 self.placement.config.revision)
        self.stopping.wait()
        self.health.enter_graceful_shutdown()
        time.sleep(NOT_SERVING_NOTICE_S)
        self.server.stop(self.settings.grace_s).wait()
        log.info("worker %d stopped", self.settings.index)

    def _follow_readiness(self) -> None:
        """SERVING while a snapshot is attached, undamaged (its checksum is verified again every
        --snapshot-verify-interval) and, with a maximum age, its last write is recent enough."""
        serving = False
        max_age = self.settings.max_snapshot_age_s
        next_verify = time.monotonic() + self.settings.snapshot_verify_interval_s
        while not self.stopping.is_set():
            try:
                if time.monotonic() >= next_verify:
                    next_verify = time.monotonic() + self.settings.snapshot_verify_interval_s
                    self.reader.verify()
                snapshot, damage = self.reader.current(), None
            except SnapshotError as error:
                snapshot, damage = None, error
            ready = snapshot is not None and (max_age is None or snapshot_age(snapshot) <= max_age)
            if ready != serving:
                serving = ready
                if damage is not None:
                    log.error("worker %d: %s: NOT_SERVING", self.settings.index, damage)
                elif snapshot is None:
                    log.warning("worker %d: no snapshot, NOT_SERVING", self.settings.index)
                elif ready:
                    log.info("worker %d on snapshot generation %d, SERVING", self.settings.index,
                             snapshot.generation)
                else:
                    log.warning("worker %d: last write %.1fs ago, over --max-snapshot-age %ss: NOT_SERVING",
                                self.settings.index, snapshot_age(snapshot), max_age)
                status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
                for service in ("", PLACEMENT_SERVICE):
                    self.health.set(service, status)
            self.stopping.wait(READINESS_POLL_S)

    def _reload_when_asked(self) -> None:
        while True:
            self.reload_requested.wait()
            # Cleared before reading: a SIGHUP from here on reads the file again.
            self.reload_requested.clear()
            try:
                config = load_config(self.settings.config_path)
            except ConfigError as error:  # the supervisor validated it; keep answering regardless
                log.error("worker %d: reload refused, still on config revision %s: %s",
                          self.settings.index, self.placement.config.revision, error)
                continue
            if config.revision != self.placement.config.revision:
                self.placement.config = config
                log.info("worker %d now on config revision %s", self.settings.index, config.revision)

    def _stop_with_parent(self) -> None:
        """A worker whose supervisor is gone answers from its last snapshot for the orphan grace, then
        stops: it must not hold the port for good (a successor on the state directory stops it sooner)."""
        multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
        if self.stopping.is_set():
            return
        grace = self.settings.orphan_grace_s
        self.placement.orphaned = True
        deadline = time.monotonic() + grace
        while not self.stopping.is_set() and time.monotonic() < deadline:
            snapshot = self.reader.current()
            log.warning("worker %d: supervisor gone; answering from snapshot generation %s (last write %s ago) "
                        "for %.0fs more", self.settings.index, snapshot.generation if snapshot else "-",
                        f"{snapshot_age(snapshot):.1f}s" if snapshot else "-", deadline - time.monotonic())
            self.stopping.wait(min(ORPHAN_LOG_EVERY_S, max(0.0, deadline - time.monotonic())))
        if not self.stopping.is_set():
            log.warning("worker %d: supervisor gone for %.0fs, stopping", self.settings.index, grace)
            self.stopping.set()


def keep_freed_memory_for_reuse() -> None:
    """Let glibc reuse freed blocks of up to MMAP_THRESHOLD_BYTES instead of unmapping them.

    A SelectDestinations call allocates a few per-host numpy temporaries (800 KB each at 100k
    hosts). Above glibc's default thresholds each one was mmapped or trimmed away again when
    freed, so every call faulted in ~1 MB of fresh zeroed pages: ~290 page faults and ~0.7 ms of
    kernel time per call on the decision thread. No-op outside glibc."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)


def run(settings: WorkerSettings) -> None:
    """Process entry point (forked by the supervisor's multiprocessing fork server)."""
    # What the fork server imported stays out of this process's collections: a full collection
    # writes to every object it visits, which would copy the pages all workers share.
    gc.freeze()
    keep_freed_memory_for_reuse()
    set_process_title(f"worker-{settings.index}")
    configure_logging(settings.log_level, f"worker{settings.index}")
    stopping = threading.Event()
    reload_requested = threading.Event()

    def request_stop(signum, _frame):
        log.info("worker %d: %s, draining", settings.index, signal.Signals(signum).name)
        stopping.set()

    # Before anything else, so a stop requested during startup still ends cleanly. Ctrl-C reaches
    # the whole process group: the supervisor relays it as SIGTERM, so it cannot race a restart.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: reload_requested.set())
    # The supervisor starts workers with SIGHUP blocked, so one sent before the handler above
    # existed waited instead of killing the process; the configuration is read after this point.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    try:
        Worker(settings, stopping, reload_requested).serve()
    finally:
        mark_worker_dead(os.getpid())
