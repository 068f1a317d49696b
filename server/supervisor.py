"""`placecheck serve`: the supervisor, which is also the state owner.

Order matters (perf.md §1.3-1.4, grpc's examples/python/multiprocessing):
  1. reserve the decision port with an SO_REUSEPORT socket and create the
     snapshot writer and the metrics directory;
  2. spawn the decision workers, before any gRPC object exists here;
  3. serve placecheck.v1.FleetState on the state address and /metrics;
  4. load the fleet and publish generation 1 (workers turn SERVING on it);
  5. restart any worker that dies, until SIGTERM/SIGINT; then drain the
     workers, stop serving, and remove every segment, socket and file made here.
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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from engine.config import ConfigError, default_config, load_config
from engine.snapshot import SnapshotWriter
from engine.state import FleetState
from placecheck.v1 import state_pb2_grpc
from server.owner import STATE_SERVICE, FleetStateServicer
from server.metrics import MULTIPROC_DIR_ENV, SnapshotFigures, mark_worker_dead, serve_metrics
from server.worker import NOT_SERVING_NOTICE_S, WorkerSettings, configure_logging, run as run_worker

log = logging.getLogger(__name__)

# A worker that dies sooner than this after starting is restarted after a growing delay.
CRASH_LOOP_WINDOW_S = 5.0
MAX_RESTART_DELAY_S = 10.0
# How often the supervise loop looks at its workers when nothing wakes it.
SUPERVISE_POLL_S = 1.0
# Beyond the drain grace: how long a stopping worker may take before it is killed.
STOP_MARGIN_S = 5.0


class StartupError(Exception):
    """The sidecar cannot start as asked (address in use, bad config or fleet file...)."""


@dataclass(frozen=True)
class ServeOptions:
    listen: str = "127.0.0.1:50051"
    state_listen: str = "unix:/tmp/placecheck-state.sock"
    metrics_port: int = 9464  # 0 disables
    metrics_host: str = "127.0.0.1"
    workers: int = os.cpu_count() or 1
    threads_per_worker: int = 16
    config_path: str | None = None
    fleet_path: str | None = None
    demo_hosts: int = 10_000
    demo_seed: int = 0
    grace_s: float = 5.0
    log_level: str = "info"


def split_host_port(address: str) -> tuple[str, int]:
    """'127.0.0.1:50051' or '[::1]:50051' -> (host, port)."""
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise StartupError(f"listen address {address!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def reserve_port(host: str, port: int) -> socket.socket:
    """Hold the decision port for the workers (SO_REUSEPORT, bound, never listening).

    A first bind without SO_REUSEPORT fails if anything at all holds the port,
    including another sidecar's workers, which SO_REUSEPORT alone would
    silently share connections with.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise StartupError(f"cannot listen on {host}:{port}: {error.strerror}") from None
        port = probe.getsockname()[1]
        reserved = socket.socket(family, socket.SOCK_STREAM)
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


def load_initial_fleet(options: ServeOptions):
    if options.fleet_path:
        from engine.fleetfile import load_fleet

        return load_fleet(options.fleet_path)
    from engine.demo import demo_fleet

    return demo_fleet(options.demo_hosts, options.demo_seed)


class Supervisor:
    def __init__(self, options: ServeOptions):
        self.options = options
        self.context = multiprocessing.get_context("spawn")
        self.workers: list[multiprocessing.Process | None] = [None] * options.workers
        self.started_at = [0.0] * options.workers
        self.restart_delay = [0.0] * options.workers
        self.stopping = False
        self._wake_read, self._wake_write = os.pipe()

    def request_stop(self, signum, _frame) -> None:
        self.stopping = True
        os.write(self._wake_write, b"x")  # wake the supervise loop now

    def run(self) -> int:
        options = self.options
        config_path = options.config_path
        try:
            load_config(config_path) if config_path else default_config()
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
                self._start(cleanup)
            except (StartupError, ConfigError, OSError, ValueError) as error:
                log.error("cannot start: %s", error)
                return 2
            self._supervise()
            log.info("stopping: draining workers")
            # Workers first, so they turn NOT_SERVING at once; the rest unwinds below.
            self._stop_workers()
        log.info("stopped")
        return 0

    def _start(self, cleanup: contextlib.ExitStack) -> None:
        options = self.options
        host, port = split_host_port(options.listen)
        reserved = reserve_port(host, port)
        cleanup.callback(reserved.close)
        decision_address = f"[{host}]:{reserved.getsockname()[1]}" if ":" in host else \
            f"{host}:{reserved.getsockname()[1]}"

        metrics_dir = tempfile.mkdtemp(prefix="placecheck-metrics-")
        cleanup.callback(shutil.rmtree, metrics_dir, ignore_errors=True)
        os.environ[MULTIPROC_DIR_ENV] = metrics_dir  # inherited by every spawned worker

        writer = SnapshotWriter(f"placecheck-{os.getpid()}")
        cleanup.callback(writer.close)

        self.worker_settings = [
            WorkerSettings(index=index, listen=decision_address, snapshot_prefix=writer.prefix,
                           config_path=options.config_path, threads=options.threads_per_worker,
                           grace_s=options.grace_s, log_level=options.log_level)
            for index in range(options.workers)]
        cleanup.callback(self._stop_workers)
        for index in range(options.workers):
            self._start_worker(index)

        # gRPC objects only from here on: the workers are already running.
        state = self._serve_state(writer, cleanup)
        if options.metrics_port:
            http_server = serve_metrics(options.metrics_host, options.metrics_port, lambda: _figures(state))
            cleanup.callback(http_server.shutdown)
        log.info("decisions on %s (%d workers), state on %s, metrics on %s",
                 decision_address, options.workers, options.state_listen,
                 f"http://{options.metrics_host}:{options.metrics_port}/metrics" if options.metrics_port else "off")

        fleet = load_initial_fleet(options)
        generation = state.replace(fleet)
        log.info("published generation %d: %d hosts, %d aggregates",
                 generation, len(fleet.hosts), len(fleet.aggregates))

    def _serve_state(self, writer: SnapshotWriter, cleanup: contextlib.ExitStack) -> FleetState:
        socket_path = remove_stale_socket(self.options.state_listen)
        state = FleetState(writer)
        server = grpc.server(ThreadPoolExecutor(max_workers=4, thread_name_prefix="state"))
        state_pb2_grpc.add_FleetStateServicer_to_server(FleetStateServicer(state), server)
        health_servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection((STATE_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        if server.add_insecure_port(self.options.state_listen) == 0:
            raise StartupError(f"cannot listen on {self.options.state_listen}")
        server.start()
        if socket_path:
            cleanup.callback(_unlink_if_present, socket_path)
        cleanup.callback(lambda: server.stop(self.options.grace_s).wait())
        cleanup.callback(health_servicer.enter_graceful_shutdown)
        return state

    def _start_worker(self, index: int) -> None:
        process = self.context.Process(target=run_worker, args=(self.worker_settings[index],),
                                       name=f"placecheck-worker-{index}")
        process.start()
        self.workers[index] = process
        self.started_at[index] = time.monotonic()
        log.info("worker %d started, pid %d", index, process.pid)

    def _supervise(self) -> None:
        restart_at: dict[int, float] = {}
        while not self.stopping:
            now = time.monotonic()
            for index, process in enumerate(self.workers):
                if index in restart_at:
                    if now >= restart_at[index]:
                        del restart_at[index]
                        self._start_worker(index)
                    continue
                if process.exitcode is None:
                    continue
                process.join()
                mark_worker_dead(process.pid)  # a crashed worker could not do it itself
                crashed_early = now - self.started_at[index] < CRASH_LOOP_WINDOW_S
                self.restart_delay[index] = (min(max(2 * self.restart_delay[index], 0.1), MAX_RESTART_DELAY_S)
                                             if crashed_early else 0.0)
                log.warning("worker %d (pid %d) exited with %s; restarting in %.1fs",
                            index, process.pid, process.exitcode, self.restart_delay[index])
                restart_at[index] = now + self.restart_delay[index]
            timeout = min([SUPERVISE_POLL_S] + [max(0.0, at - now) for at in restart_at.values()])
            running = [p.sentinel for i, p in enumerate(self.workers) if i not in restart_at]
            ready = multiprocessing.connection.wait(running + [self._wake_read], timeout)
            if self._wake_read in ready:
                os.read(self._wake_read, 64)

    def _stop_workers(self) -> None:
        running = [p for p in self.workers if p is not None and p.exitcode is None]
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


def _figures(state: FleetState) -> SnapshotFigures | None:
    status = state.status()
    if not status.generation:
        return None
    return SnapshotFigures(generation=status.generation, age_seconds=status.age_seconds,
                           hosts=status.host_count)


def _unlink_if_present(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def serve(options: ServeOptions) -> int:
    configure_logging(options.log_level, "supervisor")
    return Supervisor(options).run()
