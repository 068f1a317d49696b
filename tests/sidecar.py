"""Start the real sidecar (`python -m placecheck_server.cli serve`) for tests.

    with start_sidecar(workers=2, demo_hosts=2000) as sidecar:
        PlacementClient(sidecar.decision_target) ...

It runs on free loopback ports and a unix socket in its own temp directory,
which is also the sidecar's TMPDIR (so tests can see the metrics directory it
makes there) and holds its state directory (`state_dir`), and is stopped with
SIGTERM, asserting a clean exit.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from placecheck import ClientTls, wait_until_serving

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
FORK_SERVER_TITLE = b"placecheck-forkserver"  # server/forkserver_title.py


def wait_for(condition, what: str, timeout: float = 30.0):
    """condition()'s first true value, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_port_range(count: int) -> int:
    """The first of `count` consecutive loopback ports free now (for --worker-ports)."""
    for _ in range(100):
        base = free_port()
        if base + count <= 65536 and all(_port_is_free(port) for port in range(base + 1, base + count)):
            return base
    raise RuntimeError(f"found no {count} consecutive free ports")


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _as_file(value, directory: Path, name: str) -> str:
    """A path as given, or a dict written to `directory/name` as JSON (fleets)."""
    if isinstance(value, dict):
        path = directory / name
        path.write_text(json.dumps(value))
        return str(path)
    return str(value)


class Sidecar:
    def __init__(self, process: subprocess.Popen, workdir: tempfile.TemporaryDirectory,
                 decision_target: str, state_target: str, metrics_url: str | None, log_path: Path,
                 state_dir: Path):
        self.process = process
        self._workdir = workdir
        self.tmpdir = Path(workdir.name)
        self.state_dir = state_dir
        self.decision_target = decision_target
        self.state_target = state_target
        self.metrics_url = metrics_url
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The decision workers: the children of the supervisor's fork server (not of
        multiprocessing's resource tracker, the supervisor's other child)."""
        parents, fork_servers = self._processes()
        return sorted(pid for pid, parent in parents.items() if parent in fork_servers)

    def fork_server_pids(self) -> list[int]:
        """multiprocessing's fork server(s) among the supervisor's children."""
        return sorted(self._processes()[1])

    def other_child_pids(self) -> list[int]:
        """The supervisor's children besides its fork server: multiprocessing's resource tracker."""
        parents, fork_servers = self._processes()
        return sorted(pid for pid, parent in parents.items() if parent == self.process.pid and pid not in fork_servers)

    def _processes(self) -> tuple[dict[int, int], set[int]]:
        """Every process's parent, and the supervisor's fork servers."""
        parents, fork_servers = {}, set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            pid, parent = int(entry.name), int(stat.rsplit(")", 1)[1].split()[1])
            parents[pid] = parent
            if parent == self.process.pid and cmdline.startswith(FORK_SERVER_TITLE) and \
                    stat.rsplit(")", 1)[1].split()[0] != "Z":
                fork_servers.add(pid)
        return parents, fork_servers

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait, and assert a clean exit; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"sidecar did not stop within {timeout}s:\n{self.log()[-4000:]}")
        code = self.process.returncode
        assert code == 0, f"sidecar exited with {code}:\n{self.log()[-4000:]}"
        return code

    def close(self) -> None:
        """Stop if still running (killing when it will not stop) and remove the temp directory."""
        try:
            if self.process.poll() is None:
                self.stop()
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._workdir.cleanup()

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def start_sidecar(*, config=None, fleet=None, workers: int = 2, demo_hosts: int | None = None,
                  metrics: bool = True, extra_args: tuple[str, ...] = (), state_dir: Path | None = None,
                  decision_target: str | None = None, wait_serving: bool = True,
                  decision_tls: ClientTls | None = None, placecheck: tuple[str, ...] | None = None) -> Sidecar:
    """Run the sidecar and wait until its state service answers and (unless wait_serving=False)
    its decision port reports SERVING.

    `config` is a TOML file path; `fleet` a fleet file path or a fleet-file dict;
    `demo_hosts` the size of a demo fleet (--demo) when no fleet is given; with neither the
    sidecar starts with no fleet. `state_dir` defaults to one in the sidecar's temp directory;
    give one to restart on another sidecar's state (and `decision_target` to keep its port).
    `decision_tls`: how to reach a decision port that serves TLS (--tls-cert in extra_args).
    `placecheck`: the command that runs placecheck (default: this interpreter's -m placecheck_server.cli), e.g.
    the console script of an installed wheel.
    """
    workdir = tempfile.TemporaryDirectory(prefix="placecheck-test-")
    directory = Path(workdir.name)
    state_dir = state_dir or directory / "state"
    decision_target = decision_target or f"127.0.0.1:{free_port()}"
    state_target = f"unix:{directory / 'state.sock'}"
    metrics_port = free_port() if metrics else 0
    command = [*(placecheck or (sys.executable, "-m", "placecheck_server.cli")), "serve", "--listen", decision_target,
               "--state-listen", state_target, "--metrics-port", str(metrics_port),
               "--workers", str(workers), "--state-dir", str(state_dir), *extra_args]
    if config is not None:
        command += ["--config", str(config)]
    if fleet is not None:
        command += ["--fleet", _as_file(fleet, directory, "fleet.json")]
    if demo_hosts is not None:
        command += ["--demo", "--demo-hosts", str(demo_hosts)]
    log_path = directory / "sidecar.log"
    env = {**os.environ, "TMPDIR": str(directory)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    sidecar = Sidecar(process, workdir, decision_target, state_target,
                      f"http://127.0.0.1:{metrics_port}/metrics" if metrics else None, log_path, state_dir)
    try:
        # The state service first: it answers only once any predecessor's orphaned workers,
        # which may still report SERVING on a reused decision port, are gone.
        _wait_state_answers(sidecar)
        if wait_serving:
            _wait_serving(sidecar, decision_tls)
    except BaseException:
        sidecar.process.kill()
        sidecar.process.wait()
        log = sidecar.log()
        workdir.cleanup()
        raise RuntimeError(f"sidecar did not start:\n{log[-4000:]}") from None
    return sidecar


def _wait_serving(sidecar: Sidecar, tls: ClientTls | None) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if sidecar.process.poll() is not None:
            raise RuntimeError(f"exited with {sidecar.process.returncode}")
        try:
            wait_until_serving(sidecar.decision_target, timeout=min(1.0, deadline - time.monotonic()), tls=tls)
            return
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise


def _wait_state_answers(sidecar: Sidecar) -> None:
    from placecheck import StateClient

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    with StateClient(sidecar.state_target) as client:
        while True:
            if sidecar.process.poll() is not None:
                raise RuntimeError(f"exited with {sidecar.process.returncode}")
            try:
                client.status(timeout=1.0)
                return
            except grpc.RpcError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
