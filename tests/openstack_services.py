"""Real OpenStack services for tests: Placement (`openstack-placement`) and nova-api (`nova`).

    with start_placement() as placement, start_nova(placement) as nova:
        placement.put(f"/resource_providers/{uuid}/inventories", {...})
        nova.post("/os-aggregates", {...})

`make placement` and `make nova` install the packages (and gunicorn) into .venv-placement and
.venv-nova; without them the fixtures skip, naming why. Each service runs under gunicorn on a
loopback port, on SQLite databases made by the package's own manage command, and is stopped after.
Placement: `[api] auth_strategy = noauth2` (the token `admin` is an admin). nova-api: Nova 34 has
no noauth2, so its paste pipeline runs without keystonemiddleware's authtoken and the request
context comes from the X-User-Id, X-Project-Id and X-Roles headers; `transport_url = fake://`.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sidecar import REPO

PLACEMENT_VENV = REPO / ".venv-placement"
NOVA_VENV = REPO / ".venv-nova"
NOAUTH_TOKEN = "admin"
# The newest microversion openstack-placement 16.0.0 serves; allocations at 1.38+ name a consumer_type.
PLACEMENT_MICROVERSION = "1.39"
NOVA_MICROVERSION = "2.100"  # Nova 34's newest
STARTUP_TIMEOUT_S = 60.0
SQLITE_LOCKED_RETRIES = 20


NOAUTH_TOKEN_FILTER = f'''"""Stands in for keystonemiddleware's authtoken in the test nova-api."""


def filter_factory(global_config, **local_config):
    def middleware(app):
        def application(environ, start_response):
            if environ.get("HTTP_X_AUTH_TOKEN") != {NOAUTH_TOKEN!r}:
                start_response("401 Unauthorized", [("Content-Type", "text/plain")])
                return [b"the test nova-api takes the token {NOAUTH_TOKEN}"]
            environ.update(HTTP_X_USER_ID="admin", HTTP_X_PROJECT_ID="admin", HTTP_X_ROLES="admin,member,reader",
                           HTTP_X_IDENTITY_STATUS="Confirmed")
            return app(environ, start_response)
        return application
    return middleware
'''


class ServiceError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str):
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


PlacementError = ServiceError


class Service:
    """A running service (gunicorn) and a small REST client for it, as an admin at the newest
    microversion."""

    name = ""
    microversion = ""

    def __init__(self, process: subprocess.Popen, workdir: tempfile.TemporaryDirectory, log_path: Path):
        self.process = process
        self._workdir = workdir
        self.directory = Path(workdir.name)
        self.endpoint = ""
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def headers(self, microversion: str) -> dict[str, str]:
        raise NotImplementedError

    def request(self, method: str, path: str, body=None, *, microversion: str | None = None):
        """The decoded JSON answer (None when the answer has no body); ServiceError on HTTP >= 400.

        SQLite refuses a transaction that would wait on another writer ("database is locked",
        a 500 that rolled the request back): such a request is sent again, as a client of a
        production database would never need to."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.endpoint + path, data=data, method=method, headers={
            **self.headers(microversion or self.microversion),
            "Accept": "application/json", "Content-Type": "application/json"})
        for attempt in range(SQLITE_LOCKED_RETRIES + 1):
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    text = response.read().decode()
                return json.loads(text) if text else None
            except urllib.error.HTTPError as error:
                failure = ServiceError(method, path, error.code, error.read().decode(errors="replace"))
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

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class Placement(Service):
    name = "Placement"
    microversion = PLACEMENT_MICROVERSION

    def headers(self, microversion: str) -> dict[str, str]:
        return {"X-Auth-Token": NOAUTH_TOKEN, "OpenStack-API-Version": f"placement {microversion}"}


class NoPortsNeutron:
    """Stands in for Neutron, which the tests do not run: nova-api's server views ask it for the
    servers' ports (for their security groups); it answers that no server has one, and 404 to
    anything else."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                found = self.path.startswith("/v2.0/ports")
                body = json.dumps({"ports": []} if found else {"NeutronError": "not in the stand-in"}).encode()
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Nova(Service):
    name = "nova-api"
    microversion = NOVA_MICROVERSION
    neutron: NoPortsNeutron | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.neutron is not None:
                self.neutron.close()

    def headers(self, microversion: str) -> dict[str, str]:
        return {"X-Auth-Token": NOAUTH_TOKEN, "OpenStack-API-Version": f"compute {microversion}"}

    def register_computes(self, computes: list[dict]) -> None:
        """Compute hosts as database records (tests/nova_records.py): dicts of host, uuid (its
        Placement provider), host_ip and optionally disabled."""
        self._records("computes", computes)

    def record_instances(self, instances: list[dict]) -> None:
        """Instances as database records, or their host and states updated: dicts of uuid, host,
        project_id, vm_state, task_state."""
        self._records("instances", instances)

    def _records(self, kind: str, specs: list[dict]) -> None:
        finished = subprocess.run([str(NOVA_VENV / "bin" / "python"), str(REPO / "tests" / "nova_records.py"),
                                   str(self.directory / "nova.conf"), kind, json.dumps(specs)],
                                  capture_output=True, text=True, env=_without_venv(os.environ))
        assert finished.returncode == 0, finished.stderr[-3000:]


def unavailable_reason(venv: Path, package: str) -> str | None:
    """Why a service cannot run here (its venv did not install), or None when it can."""
    if (venv / ".installed").exists():
        return None
    log = venv.with_name(venv.name + ".log")
    if log.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        return f"{package} did not install ({log}): {' | '.join(tail)}"
    return f"{package} is not installed: run `make {venv.name.removeprefix('.venv-')}`"


def placement_unavailable_reason() -> str | None:
    return unavailable_reason(PLACEMENT_VENV, "openstack-placement")


def _without_venv(environment) -> dict[str, str]:
    """The environment for another venv's programs: without placecheck's venv on PATH."""
    return {name: value for name, value in environment.items() if name not in ("VIRTUAL_ENV", "PYTHONPATH")}


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
    env = {**_without_venv(os.environ), "OS_PLACEMENT_CONFIG_DIR": str(directory)}
    subprocess.run([str(PLACEMENT_VENV / "bin" / "placement-manage"), "--config-dir", str(directory),
                    "db", "sync"], check=True, env=env, capture_output=True)
    return _serve(Placement, workdir, PLACEMENT_VENV, env, "placement.wsgi.api:application", workers,
                  probe="/resource_providers")


def start_nova(placement: Placement) -> Nova:
    """nova-api on SQLite api, cell0 and cell1 databases made by nova-manage, with the fake
    transport; its [placement] section names the test Placement, so adding a host to an aggregate
    mirrors it there, as Nova does."""
    workdir = tempfile.TemporaryDirectory(prefix="nova-test-")
    directory = Path(workdir.name)
    neutron = NoPortsNeutron()
    database = f"sqlite:///{directory}/{{}}.db?timeout=30"
    (directory / "nova.conf").write_text(
        "[DEFAULT]\n"
        "transport_url = fake://\n"
        f"state_path = {directory}\n"
        "host = placecheck-test-api\n"
        "[api_database]\n"
        f"connection = {database.format('api')}\n"
        "[database]\n"
        f"connection = {database.format('cell1')}\n"
        "[oslo_concurrency]\n"
        f"lock_path = {directory}\n"
        "[placement]\n"
        "auth_type = admin_token\n"
        f"endpoint = {placement.endpoint}\n"
        f"token = {NOAUTH_TOKEN}\n"
        "[neutron]\n"
        f"endpoint_override = {neutron.endpoint}\n")
    paste = (NOVA_VENV / "etc" / "nova" / "api-paste.ini").read_text()
    (directory / "api-paste.ini").write_text(
        paste.replace(" authtoken keystonecontext", " noauthtoken keystonecontext")
        + "\n[filter:noauthtoken]\npaste.filter_factory = nova_noauth_token:filter_factory\n")
    # In keystonemiddleware's authtoken's place: the token `admin` is the admin, as Placement's
    # noauth2 has it, and becomes the identity headers Nova's keystonecontext reads.
    (directory / "nova_noauth_token.py").write_text(NOAUTH_TOKEN_FILTER)
    # Nova parses the command line as its own options: gunicorn's must not reach it.
    (directory / "nova_api_wsgi.py").write_text(
        "import sys\nsys.argv = sys.argv[:1]\nfrom nova.wsgi.osapi_compute import application  # noqa\n")
    env = {**_without_venv(os.environ), "OS_NOVA_CONFIG_DIR": str(directory)}
    manage = [str(NOVA_VENV / "bin" / "nova-manage"), "--config-file", str(directory / "nova.conf")]
    for command in (["api_db", "sync"],
                    ["cell_v2", "map_cell0", "--database_connection", database.format("cell0")],
                    ["cell_v2", "create_cell", "--name", "cell1", "--database_connection", database.format("cell1"),
                     "--transport-url", "fake://"],
                    ["db", "sync"]):
        finished = subprocess.run(manage + command, env=env, capture_output=True, text=True)
        if finished.returncode:
            workdir.cleanup()
            neutron.close()
            raise RuntimeError(f"nova-manage {' '.join(command)} failed:\n{finished.stdout}{finished.stderr}")
    try:
        nova = _serve(Nova, workdir, NOVA_VENV, env, "nova_api_wsgi:application", workers=1,
                      probe="/v2.1/os-services")
    except BaseException:
        neutron.close()
        raise
    nova.neutron = neutron
    return nova


def _serve(kind: type[Service], workdir: tempfile.TemporaryDirectory, venv: Path, env: dict, app: str,
           workers: int, probe: str) -> Service:
    """gunicorn serving `app` from `venv` on a loopback port, once `probe` answers."""
    directory = Path(workdir.name)
    log_path = directory / "gunicorn.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), "--bind", "127.0.0.1:0", "--workers", "1",
             "--worker-class", "gthread", "--threads", "8", "--no-control-socket", "--chdir", str(directory), app],
            cwd=directory, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    service = kind(process, workdir, log_path)
    started = time.monotonic()
    try:
        # Port 0, and the port read from gunicorn's log: a port picked free beforehand may be
        # taken by another process before gunicorn binds it.
        service.endpoint = _listening_at(service)
        _wait_answers(service, probe)
        # The first worker has filled the database's tables of standard names (Placement's
        # traits and resource classes); workers booting at once would race to, and SQLite
        # refuses one of them, which then fails to boot. Further workers now find them filled.
        for _ in range(workers - 1):
            process.send_signal(signal.SIGTTIN)
        while service.log().count("Booting worker") < workers:
            if time.monotonic() - started > STARTUP_TIMEOUT_S:
                raise TimeoutError(f"{workers - 1} more gunicorn worker(s) did not boot")
            time.sleep(0.05)
    except BaseException:
        log = service.log()
        service.close()
        raise RuntimeError(f"{kind.name} did not start:\n{log[-4000:]}") from None
    return service


def _listening_at(service: Service) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not (found := re.search(r"Listening at: (http://127\.0\.0\.1:\d+)", service.log())):
        if service.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {service.process.returncode}")
        if time.monotonic() >= deadline:
            raise TimeoutError("gunicorn did not say where it listens")
        time.sleep(0.05)
    return found.group(1)


def _wait_answers(service: Service, probe: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if service.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {service.process.returncode}")
        try:
            service.get(probe)
            return
        except (OSError, ServiceError):
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


@pytest.fixture(scope="module")
def nova(placement):
    """A real nova-api for the module's tests, its [placement] the `placement` fixture's; skips
    when it is not installed."""
    reason = unavailable_reason(NOVA_VENV, "nova")
    if reason:
        pytest.skip(reason)
    with start_nova(placement) as running:
        yield running
