"""`placecheck serve`: the supervisor, which is also the state owner.

Order matters (perf.md §1.3-1.4, grpc's examples/python/multiprocessing):
  1. lock the state directory, remove what a dead predecessor left there (its orphaned
     workers, segments, metrics directory, socket) and open the store, refusing a damaged one;
  2. reserve the decision port with an SO_REUSEPORT socket and create the
     snapshot writer and the metrics directory;
  3. start the decision workers. They fork from multiprocessing's fork server:
     a fresh interpreter that has imported everything a worker runs (grpc,
     numpy, the engine, the stubs) but holds no fleet and no gRPC object, so
     every worker, first or restarted, shares those pages copy-on-write and
     obeys grpc's rule to fork before creating any gRPC object;
  4. publish the fleet the store recovered, if any (workers turn SERVING on it), serve
     placecheck.v1.FleetState on the state address and /metrics; on a store with no write
     yet, load --fleet or the --demo fleet as its first write, or wait for a client's;
  5. restart any worker that dies, until SIGTERM/SIGINT; then drain the
     workers, stop serving, and remove every segment, socket and file made here.

SIGHUP reloads the --config file: the supervisor validates it, keeps the accepted
bytes in a private copy (the file the workers read, so a restarted worker starts
on the last accepted configuration whatever the operator's file says by then)
and forwards SIGHUP to every worker. A refused file changes nothing anywhere.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2_grpc

from placecheck_engine.config import Config, ConfigError, config_from_bytes, default_config, read_config_file
from placecheck_engine.snapshot import SnapshotWriter
from placecheck_engine.state import FleetState
from placecheck_engine.store import FleetStore, StoreDamaged
from placecheck.client import default_state_dir, default_state_socket
from placecheck.v1 import state_pb2, state_pb2_grpc
from placecheck_server.fleet_builder import BuildStopped, BuiltFleet, FleetBuilder, release_freed_memory
from placecheck_server.json_logs import AuditLog, DecisionLogSettings
from placecheck_server.owner import STATE_SERVICE, FleetStateServicer
from placecheck_server.security import AccessPolicy, AuthInterceptor, TlsMaterial, Tokens
from placecheck_server.proctitle import set_process_title
from placecheck_server.standard_services import HealthServicer, add_reflection
from placecheck_server.state_socket import SocketDirError, StateSocketRelay, default_allowed_uids, private_directory, \
    private_socket_path
from placecheck_server.metrics import (MULTIPROC_DIR_ENV, CallMetrics, SnapshotFigures, SupervisorMetrics, TimedPublisher,
                            mark_worker_dead, serve_metrics)
from placecheck_server.rundir import (RunRecord, StateDirBusy, clean_up_after_predecessor, lock_state_dir,
                           process_start_time, running, stop_orphans)
from placecheck_server.worker import NOT_SERVING_NOTICE_S, RequestLimits, WorkerSettings, configure_logging, run as run_worker

log = logging.getLogger(__name__)

# A worker that dies sooner than this after starting is restarted after a growing delay.
CRASH_LOOP_WINDOW_S = 5.0
MAX_RESTART_DELAY_S = 10.0
# How often the supervise loop looks at its workers when nothing wakes it.
SUPERVISE_POLL_S = 1.0
# Beyond the drain grace: how long a stopping worker may take before it is killed.
STOP_MARGIN_S = 5.0
# A whole fleet may arrive in one ReplaceFleet: gRPC's default 4 MiB limit held about 3,000 hosts.
MAX_STATE_MESSAGE_BYTES = 1 << 30
# FleetState handlers mostly wait for their commit: the more run at once, the more writes share
# one commit (engine.store's group commit).
STATE_THREADS = 16
# The nice value of the threads that apply fleet writes (FleetState handlers, the store's commit
# thread): on a busy machine the decision workers, whose latency callers wait on, go first.
STATE_WRITE_NICE = 10
# Imported once by the fork server, before it forks any worker: server.worker brings in grpc,
# numpy, the engine and the generated stubs; the others are what a worker imports later on (its
# gRPC server, its metrics, numpy's masked arrays). prometheus_client reads
# PROMETHEUS_MULTIPROC_DIR on import, which is set before the fork server starts.
WORKER_PRELOAD = ["placecheck_server.worker", "grpc._server", "numpy.ma",
                  "prometheus_client", "prometheus_client.multiprocess", "placecheck_server.forkserver_title"]


class StartupError(Exception):
    """The sidecar cannot start as asked (address in use, bad config or fleet file...)."""


@dataclass(frozen=True)
class ServeOptions:
    listen: str = "127.0.0.1:50051"
    state_listen: str = f"unix:{default_state_socket()}"
    metrics_port: int = 9464  # 0 disables
    metrics_host: str = "127.0.0.1"
    workers: int = os.cpu_count() or 1
    # Worker i also serves decisions on the decision host at this port + i, so that a caller
    # can balance calls (not just connections) over the workers; None: the shared port only.
    worker_ports: int | None = None
    # Handler threads: one worker's CPU per call is lowest with 2 (more contend for its GIL).
    threads_per_worker: int = 2
    config_path: str | None = None
    # Where the store lives; None: default_state_dir(), or with --demo a temporary directory
    # (so an invented fleet is never recovered by a later start).
    state_dir: str | None = None
    fleet_path: str | None = None  # the first write of a store that has none
    demo: bool = False  # the demo fleet as the first write instead
    demo_hosts: int = 10_000
    demo_seed: int = 0
    # Health turns NOT_SERVING when the last write is older than this; None: never for age.
    max_snapshot_age_s: float | None = None
    # Workers of a supervisor that died keep answering this long from their last snapshot.
    orphan_grace_s: float = 30.0
    limits: RequestLimits = RequestLimits()
    snapshot_verify_interval_s: float = 10.0  # workers verify their snapshot's checksum again this often
    grace_s: float = 5.0
    log_level: str = "info"
    # Who may call (README "Security"): TLS for every TCP port; callers identified by client
    # certificate (with tls.client_ca) or bearer token.
    tls: TlsMaterial | None = None
    tokens: Tokens | None = None
    decision_callers: frozenset[str] | None = None  # None: every authenticated caller
    state_writers: frozenset[str] = frozenset()  # who may call FleetState served over TCP
    state_allow_uids: frozenset[int] | None = None  # the unix state socket's; None: own uid and root
    decision_log: DecisionLogSettings | None = None  # a JSON line per decision (sampled, rate-limited)
    audit_log: str | None = None  # a JSON line per FleetState write: a file path, or "-" for stdout

    def authenticates(self) -> bool:
        return self.tokens is not None or (self.tls is not None and self.tls.client_ca is not None)

    def decision_access(self) -> AccessPolicy | None:
        if not self.authenticates():
            if self.decision_callers is not None:
                raise StartupError("--decision-callers needs callers to authenticate: give --tokens-file or "
                                   "--tls-client-ca")
            return None
        return AccessPolicy(self.tokens, self.decision_callers)


def split_host_port(address: str) -> tuple[str, int]:
    """'127.0.0.1:50051' or '[::1]:50051' -> (host, port)."""
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise StartupError(f"listen address {address!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def join_host_port(host: str, port: int) -> str:
    """split_host_port's inverse: brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reserve_port(host: str, port: int) -> socket.socket:
    """Hold the decision port for the workers (SO_REUSEPORT, bound, never listening).

    A first bind without SO_REUSEPORT fails if anything at all holds the port,
    including another sidecar's workers, which SO_REUSEPORT alone would
    silently share connections with.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a predecessor's connections in TIME_WAIT must not hold the port for a minute.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StartupError(f"cannot listen on {host}:{port}: {error.strerror}") from None
        port = probe.getsockname()[1]
        reserved = socket.socket(family, socket.SOCK_STREAM)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            probe.close()
            reserved.bind((host, port))
        except OSError as error:
            reserved.close()
            raise StartupError(f"cannot reserve {host}:{port}: {error.strerror}") from None
    return reserved


def remove_stale_socket(address: str) -> str | None:
    """For a unix: address, remove a socket file nobody listens on; refuse one in use."""
    if not address.startswith("unix:"):
        return None
    path = address[len("unix:"):].removeprefix("//")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return path
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"{path} exists and is not a socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)
            log.info("removed stale socket %s", path)
            return path
    raise StartupError(f"{path} is in use by a running server")


def load_initial_fleet(options: ServeOptions, builder: FleetBuilder, stopped) -> BuiltFleet | None:
    """The --fleet file or the --demo fleet, built in a child process (BuildStopped once stopped()
    says so); None when neither is asked for."""
    if options.fleet_path:
        from placecheck_engine.fleetfile import load_fleet

        return builder.from_fleet_source(stopped, load_fleet, options.fleet_path)
    if options.demo:
        from placecheck_engine.demo import demo_fleet

        return builder.from_fleet_source(stopped, demo_fleet, options.demo_hosts, options.demo_seed)
    return None


def yield_to_decisions() -> None:
    """Lower the calling thread's CPU priority to STATE_WRITE_NICE (Linux: per thread)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), STATE_WRITE_NICE)

class Supervisor:
    def __init__(self, options: ServeOptions):
        self.options = options
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(WORKER_PRELOAD)
        self.fleet_builder = FleetBuilder(self.context)
        self.workers: list[multiprocessing.Process | None] = [None] * options.workers
        self.started_at = [0.0] * options.workers
        self.restart_delay = [0.0] * options.workers
        self.start_times: list[int | None] = [None] * options.workers  # to tell a live worker from a reused pid
        self.restart_at: dict[int, float] = {}  # worker index -> when to start it again
        # Stopping the workers a dead fork server left running (see _restart_later).
        self.orphan_stoppers: list[threading.Thread] = []
        self.stopping = False
        self.reload_requested = False
        self.config: Config | None = None
        self.accepted_config_path: str | None = None  # the workers' copy of the last accepted file
        self._wake_read, self._wake_write = os.pipe()

    def request_stop(self, signum, _frame) -> None:
        self.stopping = True
        os.write(self._wake_write, b"x")  # wake the supervise loop now

    def request_reload(self, signum, _frame) -> None:
        self.reload_requested = True
        os.write(self._wake_write, b"x")

    def run(self) -> int:
        options = self.options
        config_path = options.config_path
        signal.signal(signal.SIGHUP, self.request_reload)  # first: SIGHUP's default action ends the process
        try:
            if config_path:
                self.config, config_content = self._read_config()
            else:
                self.config, config_content = default_config(), None
        except ConfigError as error:
            log.error("%s", error)
            return 2
        # From the start, so a stop requested while the fleet loads still cleans up.
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(os.close, self._wake_read)
            cleanup.callback(os.close, self._wake_write)
            try:
                self._start(cleanup, config_content)
            except (StartupError, ConfigError, OSError, ValueError) as error:
                log.error("cannot start: %s", error)
                return 2
            self._supervise()
            log.info("stopping: draining workers")
            # Workers first, so they turn NOT_SERVING at once; the rest unwinds below.
            self._stop_workers()
        log.info("stopped")
        return 0

    def _start(self, cleanup: contextlib.ExitStack, config_content: bytes | None) -> None:
        options = self.options
        state_dir = options.state_dir
        if state_dir is None and options.demo:
            state_dir = tempfile.mkdtemp(prefix="placecheck-demo-state-")
            cleanup.callback(shutil.rmtree, state_dir, ignore_errors=True)
        state_dir = state_dir or default_state_dir()
        try:
            cleanup.callback(os.close, lock_state_dir(state_dir))
        except StateDirBusy as error:
            raise StartupError(str(error)) from None
        predecessor_socket = clean_up_after_predecessor(
            state_dir, NOT_SERVING_NOTICE_S + options.grace_s + STOP_MARGIN_S)
        if predecessor_socket:
            with contextlib.suppress(StartupError):
                remove_stale_socket(f"unix:{predecessor_socket}")
        try:
            store = FleetStore(state_dir, commit_thread_setup=yield_to_decisions)
        except StoreDamaged as error:
            raise StartupError(str(error)) from None
        cleanup.callback(store.close)
        recovered = store.recovered
        log.info("state directory %s: fleet history %s at generation %d", state_dir, recovered.epoch,
                 recovered.generation)

        host, port = split_host_port(options.listen)
        reserved = reserve_port(host, port)
        cleanup.callback(reserved.close)
        decision_address = join_host_port(host, reserved.getsockname()[1])
        worker_addresses = self._reserve_worker_ports(host, cleanup)

        metrics_dir = tempfile.mkdtemp(prefix="placecheck-metrics-")
        cleanup.callback(shutil.rmtree, metrics_dir, ignore_errors=True)
        os.environ[MULTIPROC_DIR_ENV] = metrics_dir  # inherited by the fork server, so by every worker
        self.metrics = SupervisorMetrics()

        writer = SnapshotWriter(f"placecheck-{os.getpid()}")
        cleanup.callback(writer.close)
        state_socket = options.state_listen.removeprefix("unix:").removeprefix("//") \
            if options.state_listen.startswith("unix:") else None
        self.run_record = RunRecord(state_dir, writer.prefix, metrics_dir, state_socket)
        cleanup.callback(self.run_record.remove)  # once the workers have stopped: nothing left to clean up

        if config_content is not None:
            config_dir = tempfile.mkdtemp(prefix="placecheck-config-")
            cleanup.callback(shutil.rmtree, config_dir, ignore_errors=True)
            self.accepted_config_path = os.path.join(config_dir, "accepted.toml")
            self._accept_config(config_content)
        log.info("config %s, revision %s", options.config_path or "built-in", self.config.revision)

        self.worker_settings = [
            WorkerSettings(index=index, listen=decision_address, snapshot_prefix=writer.prefix,
                           config_path=self.accepted_config_path, threads=options.threads_per_worker,
                           grace_s=options.grace_s, log_level=options.log_level,
                           max_snapshot_age_s=options.max_snapshot_age_s, orphan_grace_s=options.orphan_grace_s,
                           limits=options.limits, tls=options.tls, access=options.decision_access(),
                           decision_log=options.decision_log,
                           snapshot_verify_interval_s=options.snapshot_verify_interval_s,
                           own_listen=worker_addresses[index] if worker_addresses else None)
            for index in range(options.workers)]
        cleanup.callback(self._stop_workers)
        for index in range(options.workers):
            self._start_worker(index)

        # gRPC objects only from here on: the workers are already running.
        state = FleetState(TimedPublisher(writer), store)  # publishes the recovered fleet, if any
        self._serve_state(state, cleanup)
        guard = threading.Thread(target=self._restore_damaged_fleet, args=(state,), name="fleet-guard", daemon=True)
        guard.start()
        if options.metrics_port:
            http_server = serve_metrics(options.metrics_host, options.metrics_port,
                                        lambda: _figures(state, options.max_snapshot_age_s), self.metrics)
            cleanup.callback(http_server.shutdown)
        log.info("decisions on %s (%d workers%s), state on %s, metrics on %s",
                 decision_address, options.workers,
                 f"; each also on its own: {','.join(worker_addresses)}" if worker_addresses else "",
                 options.state_listen,
                 f"http://{options.metrics_host}:{options.metrics_port}/metrics" if options.metrics_port else "off")

        if recovered.generation:
            if options.fleet_path or options.demo:
                log.warning("recovered generation %d from %s: it wins over %s (use `placecheck load` to "
                            "replace the fleet)", recovered.generation, store.path,
                            options.fleet_path or "--demo")
            return
        try:
            built = load_initial_fleet(options, self.fleet_builder, lambda: self.stopping)
        except BuildStopped:
            log.info("stop requested while the fleet was being built")
            return
        if built is None:
            log.warning("no fleet yet: NOT_SERVING until one is written to %s", options.state_listen)
            return
        # allow_empty: the operator's file may say no hosts
        generation = state.replace_columns(built.columns, built.aggregates, allow_empty=True)
        log.info("published generation %d: %d hosts, %d aggregates",
                 generation, built.columns.host_count, len(built.aggregates))
        del built  # the columns are the published segment's now
        release_freed_memory()

    def _reserve_worker_ports(self, host: str, cleanup: contextlib.ExitStack) -> list[str]:
        """Hold each worker's own port (--worker-ports) as the shared one is held: refused if
        anything else has it, kept across a worker's restart. Empty without --worker-ports."""
        base = self.options.worker_ports
        if base is None:
            return []
        if not 0 < base <= 65536 - self.options.workers:
            raise StartupError(f"--worker-ports {base}: ports {base}..{base + self.options.workers - 1} "
                               "are not all between 1 and 65535")
        addresses = []
        for port in range(base, base + self.options.workers):
            cleanup.callback(reserve_port(host, port).close)
            addresses.append(join_host_port(host, port))
        return addresses

    def _serve_state(self, state: FleetState, cleanup: contextlib.ExitStack) -> None:
        """FleetState on a unix socket (relayed to uids of the allow list) or over TCP (TLS when
        configured; only --state-writers may call)."""
        options = self.options
        public_path = remove_stale_socket(options.state_listen)  # None: TCP
        # Writes by method and code, and how long they took.
        interceptors = [CallMetrics(timed=True, services=[state_pb2.DESCRIPTOR.services_by_name["FleetState"]])]
        if options.audit_log:
            interceptors.append(AuditLog(options.audit_log))
        if public_path is None:
            if not (options.state_writers and options.authenticates()):
                raise StartupError(f"FleetState over TCP ({options.state_listen}) needs --state-writers and a way "
                                   "to authenticate them (--tokens-file or --tls-client-ca)")
            interceptors.append(AuthInterceptor(AccessPolicy(options.tokens, options.state_writers)))
        server = grpc.server(ThreadPoolExecutor(max_workers=STATE_THREADS, thread_name_prefix="state",
                                                initializer=yield_to_decisions),
                             options=[("grpc.max_receive_message_length", MAX_STATE_MESSAGE_BYTES)],
                             interceptors=interceptors)
        state_pb2_grpc.add_FleetStateServicer_to_server(FleetStateServicer(state, self.fleet_builder), server)
        health_servicer = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        add_reflection(server, (STATE_SERVICE,))
        if public_path is None:
            address = options.state_listen
        else:
            allowed_uids = options.state_allow_uids or default_allowed_uids()
            private_path = private_socket_path(public_path)
            try:
                # Searchable by others only when the allow list names others.
                private_directory(os.path.dirname(os.path.abspath(public_path)),
                                  0o700 if allowed_uids <= default_allowed_uids() else 0o711)
                private_directory(os.path.dirname(private_path))
            except SocketDirError as error:
                raise StartupError(str(error)) from None
            address = f"unix:{private_path}"
            remove_stale_socket(address)
        try:
            port = (server.add_secure_port(address, options.tls.server_credentials())
                    if options.tls and public_path is None else server.add_insecure_port(address))
        except RuntimeError:  # grpcio raises rather than return 0 for some addresses (a path too long)
            port = 0
        if port == 0:
            raise StartupError(f"cannot listen on {address}")
        server.start()
        if public_path:
            cleanup.callback(_unlink_if_present, private_path)
        cleanup.callback(lambda: server.stop(options.grace_s).wait())
        if public_path:
            relay = StateSocketRelay(public_path, private_path, allowed_uids)
            cleanup.callback(relay.close)
            log.info("state socket %s (uids %s) relayed to %s", public_path,
                     ", ".join(map(str, sorted(allowed_uids))), private_path)
        cleanup.callback(health_servicer.enter_graceful_shutdown)

    def _read_config(self) -> tuple[Config, bytes]:
        """The --config file's Config and the very bytes it was made from."""
        content = read_config_file(self.options.config_path)
        return config_from_bytes(content, self.options.config_path), content

    def _accept_config(self, content: bytes) -> None:
        """Replace the workers' copy atomically: a worker reads the old file or the new, never half."""
        staging = self.accepted_config_path + ".new"
        with open(staging, "wb") as file:
            file.write(content)
        os.replace(staging, self.accepted_config_path)

    def _reload(self) -> None:
        path = self.options.config_path
        if not path:
            log.info("SIGHUP: started without --config, nothing to reload")
            return
        try:
            config, content = self._read_config()
        except ConfigError as error:
            log.error("config reload refused, keeping revision %s: %s", self.config.revision, error)
            self.metrics.reloaded(ok=False)
            return
        if config.revision == self.config.revision:
            log.info("SIGHUP: %s unchanged, still revision %s", path, config.revision)
            self.metrics.reloaded(ok=True)
            return
        try:
            self._accept_config(content)
        except OSError as error:
            log.error("config reload refused, keeping revision %s: cannot write %s: %s",
                      self.config.revision, self.accepted_config_path, error.strerror)
            self.metrics.reloaded(ok=False)
            return
        self.metrics.reloaded(ok=True)
        previous, self.config = self.config, config
        for process in self.workers:
            if process is not None and process.exitcode is None:
                # One that exits meanwhile is restarted on the copy just written.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGHUP)
        log.info("config %s reloaded: revision %s -> %s, profiles %s (default %s)", path, previous.revision,
                 config.revision, ", ".join(sorted(config.profiles)), config.default_profile)

    def _start_worker(self, index: int) -> None:
        process = self.context.Process(target=run_worker, args=(self.worker_settings[index],),
                                       name=f"placecheck-worker-{index}")
        # The fork server, started by the first start (and again should it die), inherits the
        # blocked SIGHUP and keeps it blocked; each worker it forks inherits that mask and unblocks
        # SIGHUP once its handler is in place, so a reload forwarded while a worker starts up
        # waits for it instead of killing it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            process.start()
        except Exception as error:  # noqa: BLE001 - whatever a start raises, the supervisor must live on
            # A fork server killed between multiprocessing's liveness check and its reply gives
            # EOFError or a socket error here; the next start finds it dead and starts another.
            log.error("worker %d could not start (%s: %s)", index, type(error).__name__, error)
            self.metrics.worker_restarts.labels("start_failed").inc()
            self.started_at[index] = time.monotonic()
            self._restart_later(index, time.monotonic())
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.workers[index] = process
        self.start_times[index] = process_start_time(process.pid)
        self.run_record.worker_started(index, process.pid)
        self.started_at[index] = time.monotonic()
        log.info("worker %d started, pid %d", index, process.pid)

    def _restart_later(self, index: int, now: float) -> None:
        """Start worker `index` again: at once, or after a growing delay if it lasted under
        CRASH_LOOP_WINDOW_S (so a start that keeps failing is retried with backoff, never given up)."""
        crashed_early = now - self.started_at[index] < CRASH_LOOP_WINDOW_S
        self.restart_delay[index] = (min(max(2 * self.restart_delay[index], 0.1), MAX_RESTART_DELAY_S)
                                     if crashed_early else 0.0)
        self.restart_at[index] = now + self.restart_delay[index]

    def _worker_exited(self, index: int, process: multiprocessing.Process, now: float) -> None:
        process.join()
        # A worker's exit status comes through the fork server: when the fork server dies, every
        # worker it forked reads as exited (255) though it may still run, out of our sight. Such a
        # worker is told to drain and stop (a new one replaces it) rather than left to serve.
        if (self.start_times[index] is not None and process_start_time(process.pid) == self.start_times[index]
                and running(process.pid)):  # not its zombie, awaiting init
            log.warning("worker %d (pid %d) lost its fork server; stopping it and starting another",
                        index, process.pid)
            stopper = threading.Thread(
                target=stop_orphans, name=f"stop-worker-{process.pid}", daemon=True,
                args=([(process.pid, self.start_times[index])],
                      NOT_SERVING_NOTICE_S + self.options.grace_s + STOP_MARGIN_S))
            stopper.start()
            self.orphan_stoppers.append(stopper)
            self.started_at[index] = 0.0  # it did not crash: no backoff
            self.metrics.worker_restarts.labels("lost_fork_server").inc()
            self._restart_later(index, now)
        else:
            mark_worker_dead(process.pid)  # a crashed worker could not do it itself
            self.metrics.worker_restarts.labels("exited").inc()
            self._restart_later(index, now)
            log.warning("worker %d (pid %d) exited with %s; restarting in %.1fs",
                        index, process.pid, process.exitcode, self.restart_delay[index])
        self.start_times[index] = None

    def _restore_damaged_fleet(self, state: FleetState) -> None:
        """Every snapshot verify interval, as the workers do, check the published base segment and
        publish the fleet again from the store when it was changed after publishing: the workers
        refuse a damaged generation until a newer one arrives, and the state owner's own columns
        are that segment's pages."""
        while not self.stopping:
            time.sleep(self.options.snapshot_verify_interval_s)
            try:
                state.restore_if_damaged()
            except Exception:  # noqa: BLE001 -- logged; the next round tries again
                log.exception("cannot restore the damaged fleet segment")

    def _supervise(self) -> None:
        restart_at = self.restart_at
        while not self.stopping:
            if self.reload_requested:
                self.reload_requested = False
                self._reload()
            now = time.monotonic()
            for index, process in enumerate(self.workers):
                if index in restart_at:
                    if now >= restart_at[index]:
                        del restart_at[index]
                        self._start_worker(index)
                    continue
                if process.exitcode is not None:
                    self._worker_exited(index, process, now)
            now = time.monotonic()
            timeout = min([SUPERVISE_POLL_S] + [max(0.0, at - now) for at in restart_at.values()])
            running = [p.sentinel for i, p in enumerate(self.workers) if i not in restart_at]
            ready = multiprocessing.connection.wait(running + [self._wake_read], timeout)
            if self._wake_read in ready:
                os.read(self._wake_read, 64)

    def _stop_workers(self) -> None:
        running = [p for i, p in enumerate(self.workers)
                   if p is not None and i not in self.restart_at and p.exitcode is None]
        for process in running:
            process.terminate()  # SIGTERM: NOT_SERVING, drain, exit
        deadline = time.monotonic() + NOT_SERVING_NOTICE_S + self.options.grace_s + STOP_MARGIN_S
        for process in running:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                log.error("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.join()
                mark_worker_dead(process.pid)
            elif process.exitcode != 0:
                log.warning("worker pid %d exited with %s", process.pid, process.exitcode)
        for stopper in self.orphan_stoppers:
            stopper.join()  # each ends by its own deadline


def _figures(state: FleetState, max_snapshot_age_s: float | None) -> SnapshotFigures:
    status = state.status()
    if not status.generation:
        not_serving_reason = "no_fleet"
    elif max_snapshot_age_s is not None and status.age_seconds > max_snapshot_age_s:
        not_serving_reason = "stale"
    else:
        not_serving_reason = ""
    return SnapshotFigures(generation=status.generation, age_seconds=status.age_seconds,
                           hosts=status.host_count, not_serving_reason=not_serving_reason)


def _unlink_if_present(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def serve(options: ServeOptions) -> int:
    configure_logging(options.log_level, "supervisor")
    set_process_title("supervisor")
    return Supervisor(options).run()
