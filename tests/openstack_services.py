"""Real OpenStack services for tests: the Placement API from the `openstack-placement` package.

    with start_placement() as placement:
        placement.put(f"/resource_providers/{uuid}/inventories", {...})

`make placement` installs the package (and gunicorn) into .venv-placement; without it the
`placement` fixture skips, naming why. The service runs on a loopback port with a SQLite database
made by `placement-manage db sync`, `[api] auth_strategy = noauth2` (any request with the token
`admin` is an admin), served by gunicorn from the package's WSGI app factory, and is stopped
after.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sidecar import REPO

PLACEMENT_VENV = REPO / ".venv-placement"
PLACEMENT_INSTALL_LOG = REPO / ".venv-placement.log"
NOAUTH_TOKEN = "admin"
# The newest microversion openstack-placement 16.0.0 serves; allocations at 1.38+ name a consumer_type.
PLACEMENT_MICROVERSION = "1.39"
STARTUP_TIMEOUT_S = 60.0
SQLITE_LOCKED_RETRIES = 20


class PlacementError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


class Placement:
    """A running Placement service and a small REST client for it (admin, newest microversion)."""

    def __init__(self, process: subprocess.Popen, workdir: tempfile.TemporaryDirectory, endpoint: str,
                 log_path: Path):
        self.process = process
        self._workdir = workdir
        self.endpoint = endpoint
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(self, method: str, path: str, body=None, *, microversion: str = PLACEMENT_MICROVERSION):
        """The decoded JSON answer (None when the answer has no body); PlacementError on HTTP >= 400.

        SQLite refuses a transaction that would wait on another writer ("database is locked",
        a 500 that rolled the request back): such a request is sent again, as a client of a
        production database would never need to."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.endpoint + path, data=data, method=method, headers={
            "X-Auth-Token": NOAUTH_TOKEN, "OpenStack-API-Version": f"placement {microversion}",
            "Accept": "application/json", "Content-Type": "application/json"})
        for attempt in range(SQLITE_LOCKED_RETRIES + 1):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    text = response.read().decode()
                return json.loads(text) if text else None
            except urllib.error.HTTPError as error:
                failure = PlacementError(method, path, error.code, error.read().decode(errors="replace"))
            except urllib.error.URLError as error:
                exited = self.process.poll()
                raise ConnectionError(f"{method} {path}: {error.reason}; gunicorn "
                                      f"{'running' if exited is None else f'exited with {exited}'}:\n"
                                      f"{self.log()[-3000:]}") from None
            if failure.status != 500 or "database is locked" not in str(failure):
                break
            time.sleep(0.01 * (attempt + 1))
        raise failure

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def put(self, path: str, body, **kwargs):
        return self.request("PUT", path, body, **kwargs)

    def post(self, path: str, body, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(20)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            self._workdir.cleanup()

    def __enter__(self) -> Placement:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def placement_unavailable_reason() -> str | None:
    """Why the Placement service cannot run here, or None when it can."""
    if (PLACEMENT_VENV / ".installed").exists():
        return None
    if PLACEMENT_INSTALL_LOG.exists():
        tail = PLACEMENT_INSTALL_LOG.read_text(errors="replace").strip().splitlines()[-3:]
        return f"openstack-placement did not install ({PLACEMENT_INSTALL_LOG}): {' | '.join(tail)}"
    return "openstack-placement is not installed: run `make placement`"


def start_placement(workers: int = 2) -> Placement:
    """Make a database, start gunicorn on a free loopback port, wait until the API answers."""
    workdir = tempfile.TemporaryDirectory(prefix="placement-test-")
    directory = Path(workdir.name)
    (directory / "placement.conf").write_text(
        "[DEFAULT]\n"
        "debug = False\n"
        "[api]\n"
        "auth_strategy = noauth2\n"
        "[placement_database]\n"
        # Writers wait for one another (30 s) instead of failing with "database is locked".
        f"connection = sqlite:///{directory / 'placement.db'}?timeout=30\n")
    env = {**os.environ, "OS_PLACEMENT_CONFIG_DIR": str(directory)}
    subprocess.run([str(PLACEMENT_VENV / "bin" / "placement-manage"), "--config-dir", str(directory),
                    "db", "sync"], check=True, env=env, capture_output=True)
    log_path = directory / "gunicorn.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(PLACEMENT_VENV / "bin" / "gunicorn"), "--bind", "127.0.0.1:0",
             "--workers", str(workers), "--worker-class", "gthread", "--threads", "8",
             "--no-control-socket", "placement.wsgi.api:application"],
            cwd=directory, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    # Port 0, and the port read from gunicorn's log: a port picked free beforehand may be taken
    # by another process before gunicorn binds it.
    placement = Placement(process, workdir, "", log_path)
    try:
        placement.endpoint = _listening_at(placement)
        _wait_answers(placement)
    except BaseException:
        log = placement.log()
        placement.close()
        raise RuntimeError(f"Placement did not start:\n{log[-4000:]}") from None
    return placement


def _listening_at(placement: Placement) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not (found := re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", placement.log())):
        if placement.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {placement.process.returncode}")
        if time.monotonic() >= deadline:
            raise TimeoutError("gunicorn did not say where it listens")
        time.sleep(0.05)
    return found.group(1)


def _wait_answers(placement: Placement) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if placement.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {placement.process.returncode}")
        try:
            placement.get("/resource_providers")
            return
        except (OSError, PlacementError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="module")
def placement():
    """A real Placement service for the module's tests; skips when it is not installed."""
    reason = placement_unavailable_reason()
    if reason:
        pytest.skip(reason)
    with start_placement() as running:
        yield running
