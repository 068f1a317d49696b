"""Who may call: TLS and mutual TLS on the decision port, bearer tokens, the FleetState writers
over TCP, and the unix state socket's permissions and peer-uid check (README: Security).
Certificates are made by the test (tests/pki.py); every sidecar is the real one."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pki import Authority
from placecheck import ClientTls, PlacementClient, StateClient, wait_until_serving
from placecheck.client import default_state_socket
from placecheck.v1 import placement_pb2, state_pb2
from placecheck_server.state_socket import PRIVATE_DIR, private_socket_path
from sidecar import REPO, free_port, start_sidecar

TIMEOUT_S = 10.0
CONDUCTOR_TOKEN = "conductor-token-5b1f0c7e9a3d"
READER_TOKEN = "reader-token-0e8c2d4f6a1b39"  # authenticated, but not among --decision-callers
FEEDER_TOKEN = "feeder-token-7d2a9c4e1f6b08"
NOBODY = 65534
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + empty SETTINGS


def request() -> placement_pb2.PlacementRequest:
    return placement_pb2.PlacementRequest(resources={"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1})


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pki")
    authority, stranger_authority = Authority(directory, "test-ca"), Authority(directory, "stranger-ca")
    tokens = directory / "tokens"
    tokens.write_text(f"# token identity\n{CONDUCTOR_TOKEN} conductor\n\n{READER_TOKEN} reader\n"
                      f"{FEEDER_TOKEN} feeder\n")
    return {"ca": authority.path, "server": authority.server(), "conductor": authority.client("conductor"),
            "intruder": authority.client("intruder"), "stranger": stranger_authority.client("conductor"),
            "tokens": tokens}


def server_tls_args(pki, *, mutual: bool = False) -> tuple[str, ...]:
    args = ("--tls-cert", str(pki["server"].certificate), "--tls-key", str(pki["server"].key))
    return args + (("--tls-client-ca", str(pki["ca"])) if mutual else ())


def client_tls(pki, identity: str | None = None) -> ClientTls:
    issued = pki[identity] if identity else None
    return ClientTls.from_files(str(pki["ca"]), str(issued.certificate) if issued else None,
                                str(issued.key) if issued else None)


def check_code(target: str, *, tls: ClientTls | None = None, token: str | None = None) -> grpc.StatusCode:
    with PlacementClient(target, channels=1, tls=tls, token=token) as client:
        try:
            client.check_destination(request(), ["compute-00000"], timeout=TIMEOUT_S)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def token_sidecar(pki):
    with start_sidecar(workers=1, demo_hosts=50, decision_tls=client_tls(pki),
                       extra_args=(*server_tls_args(pki), "--tokens-file", str(pki["tokens"]),
                                   "--decision-callers", "conductor")) as running:
        yield running


def test_over_tls_a_caller_needs_a_token_of_an_admitted_identity(token_sidecar, pki):
    target, tls = token_sidecar.decision_target, client_tls(pki)
    assert check_code(target, tls=tls) == grpc.StatusCode.UNAUTHENTICATED
    assert check_code(target, tls=tls, token="not-a-token-of-the-file") == grpc.StatusCode.PERMISSION_DENIED
    assert check_code(target, tls=tls, token=READER_TOKEN) == grpc.StatusCode.PERMISSION_DENIED
    assert check_code(target, tls=tls, token=CONDUCTOR_TOKEN) == grpc.StatusCode.OK
    with PlacementClient(target, channels=1, tls=tls, token=CONDUCTOR_TOKEN) as client:
        assert client.select_destinations(request(), timeout=TIMEOUT_S).placements


def placecheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if key != "PLACECHECK_TOKEN"}
    return subprocess.run([sys.executable, "-m", "placecheck_server.cli", *args], cwd=REPO, env={**environment, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_the_command_line_takes_tls_and_a_token(token_sidecar, pki, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(CONDUCTOR_TOKEN + "\n")
    check = ("check", "--target", token_sidecar.decision_target, "--host", "compute-00000", "--vcpus", "1",
             "--tls-ca", str(pki["ca"]))
    refused = placecheck(*check)
    assert refused.returncode == 2 and "UNAUTHENTICATED" in refused.stderr
    allowed = placecheck(*check, "--token-file", str(token_file))
    assert allowed.returncode == 0, allowed.stderr
    assert "compute-00000: allowed" in allowed.stdout
    assert placecheck(*check, env={"PLACECHECK_TOKEN": CONDUCTOR_TOKEN}).returncode == 0


def test_a_malformed_authorization_is_unauthenticated_and_tokens_are_never_logged(token_sidecar, pki):
    with grpc.secure_channel(token_sidecar.decision_target, client_tls(pki).credentials()) as channel:
        check = channel.unary_unary("/placecheck.v1.PlacementCheck/CheckDestination",
                                    request_serializer=placement_pb2.CheckDestinationRequest.SerializeToString)
        with pytest.raises(grpc.RpcError) as refused:
            check(placement_pb2.CheckDestinationRequest(request=request(), hosts=["compute-00000"]),
                  metadata=(("authorization", f"Basic {CONDUCTOR_TOKEN}"),), timeout=TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    log = token_sidecar.log()
    assert "refused /placecheck.v1.PlacementCheck/CheckDestination" in log
    assert not any(token in log for token in (CONDUCTOR_TOKEN, READER_TOKEN, FEEDER_TOKEN))


def test_health_answers_without_credentials_but_plaintext_does_not_reach_a_tls_port(token_sidecar, pki):
    wait_until_serving(token_sidecar.decision_target, timeout=TIMEOUT_S, tls=client_tls(pki))
    with grpc.insecure_channel(token_sidecar.decision_target) as channel:
        with pytest.raises(grpc.RpcError) as refused:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_admits_the_listed_identity_only(pki):
    with start_sidecar(workers=1, demo_hosts=50, decision_tls=client_tls(pki, "conductor"),
                       extra_args=(*server_tls_args(pki, mutual=True), "--decision-callers", "conductor")) as running:
        target = running.decision_target
        assert check_code(target, tls=client_tls(pki, "conductor")) == grpc.StatusCode.OK
        assert check_code(target, tls=client_tls(pki, "intruder")) == grpc.StatusCode.PERMISSION_DENIED
        # No certificate, or one another CA signed: the handshake itself fails.
        assert check_code(target, tls=client_tls(pki)) == grpc.StatusCode.UNAVAILABLE
        assert check_code(target, tls=client_tls(pki, "stranger")) == grpc.StatusCode.UNAVAILABLE
        assert "refused /placecheck.v1.PlacementCheck/CheckDestination" in running.log()


def test_mutual_tls_with_tokens_takes_either_identity(pki):
    """Every caller shows a certificate; a token, when sent, names the identity instead."""
    with start_sidecar(workers=1, demo_hosts=50, decision_tls=client_tls(pki, "intruder"),
                       extra_args=(*server_tls_args(pki, mutual=True), "--tokens-file", str(pki["tokens"]),
                                   "--decision-callers", "conductor")) as running:
        target, intruder = running.decision_target, client_tls(pki, "intruder")
        assert check_code(target, tls=intruder) == grpc.StatusCode.PERMISSION_DENIED
        assert check_code(target, tls=intruder, token=CONDUCTOR_TOKEN) == grpc.StatusCode.OK
        assert check_code(target, tls=client_tls(pki, "conductor"), token=READER_TOKEN) == \
            grpc.StatusCode.PERMISSION_DENIED


@contextlib.contextmanager
def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None, tls: ClientTls | None = None):
    """`placecheck serve` with these arguments, until SERVING on its decision port; stopped cleanly."""
    decision_target = f"127.0.0.1:{free_port()}"
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "placecheck_server.cli", "serve", "--listen", decision_target, "--metrics-port", "0",
             "--workers", "1", "--demo", "--demo-hosts", "50", "--state-dir", str(tmp_path / "state"), *args],
            cwd=REPO, env={**os.environ, **(env or {})}, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                wait_until_serving(decision_target, timeout=1, tls=tls)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, log_path.read_text()
        yield process, decision_target, log_path
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_fleet_state_over_tcp_admits_the_state_writers_only(tmp_path, pki):
    state_target = f"127.0.0.1:{free_port()}"
    with serve(tmp_path, "--state-listen", state_target, *server_tls_args(pki), "--tokens-file", str(pki["tokens"]),
               "--state-writers", "feeder", tls=client_tls(pki)) as (_process, decision_target, _log):
        codes = {}
        for token in (None, CONDUCTOR_TOKEN, FEEDER_TOKEN):
            with StateClient(state_target, tls=client_tls(pki), token=token) as state:
                try:
                    state.update_usage([state_pb2.HostUsage(name="compute-00000", used={"VCPU": 1})], timeout=TIMEOUT_S)
                    codes[token] = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    codes[token] = error.code()
        assert codes == {None: grpc.StatusCode.UNAUTHENTICATED, CONDUCTOR_TOKEN: grpc.StatusCode.PERMISSION_DENIED,
                         FEEDER_TOKEN: grpc.StatusCode.OK}
        status = placecheck("status", "--state", state_target, "--tls-ca", str(pki["ca"]),
                            env={"PLACECHECK_TOKEN": FEEDER_TOKEN})
        assert status.returncode == 0 and "50 hosts" in status.stdout, status.stderr
        # The writers' identities are FleetState's, not the decision port's (no --decision-callers: any token).
        assert check_code(decision_target, tls=client_tls(pki), token=FEEDER_TOKEN) == grpc.StatusCode.OK


def test_fleet_state_over_tcp_without_writers_or_credentials_does_not_start(tmp_path, pki):
    for extra in ((), ("--state-writers", "feeder"), ("--tokens-file", str(pki["tokens"]))):
        result = subprocess.run(
            [sys.executable, "-m", "placecheck_server.cli", "serve", "--listen", "127.0.0.1:0", "--metrics-port", "0",
             "--workers", "1", "--state-dir", str(tmp_path / "state"), "--state-listen", f"127.0.0.1:{free_port()}",
             *extra], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        assert "FleetState over TCP" in result.stderr and "--state-writers" in result.stderr


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_default_state_socket_is_0600_in_a_0700_directory_of_its_own(tmp_path):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o755)
    with serve(tmp_path, env={"XDG_RUNTIME_DIR": str(runtime)}) as (process, _target, _log):
        public = runtime / "placecheck" / "state.sock"
        code = f"from placecheck.client import default_state_socket as d; print(d())"
        assert subprocess.run([sys.executable, "-c", code], env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
                              capture_output=True, text=True, check=True).stdout.strip() == str(public)
        assert stat.S_ISSOCK(os.stat(public).st_mode) and mode(public) == 0o600
        assert mode(public.parent) == 0o700 and os.stat(public.parent).st_uid == os.getuid()
        private = Path(private_socket_path(str(public)))
        assert private.parent == public.parent / PRIVATE_DIR and mode(private.parent) == 0o700
        with StateClient(f"unix:{public}") as state:
            assert state.status(timeout=TIMEOUT_S).host_count == 50
    assert not public.exists() and not private.exists()


def test_without_xdg_runtime_dir_the_socket_lives_under_the_state_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_socket() == str(tmp_path / "placecheck" / "run" / "state.sock")


def test_a_state_socket_in_a_directory_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp, where another user could squat the socket's name
    result = subprocess.run(
        [sys.executable, "-m", "placecheck_server.cli", "serve", "--listen", "127.0.0.1:0", "--metrics-port", "0",
         "--workers", "1", "--state-dir", str(tmp_path / "state"), "--state-listen", f"unix:{shared / 's.sock'}"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"{shared} is writable by others" in result.stderr


def probe_as(uid: int, path: str) -> str:
    """Connect to the unix socket `path` as `uid` in a forked child that uses the socket module
    only (the interpreter's own binary may not be reachable by that uid): 'no access' (the
    filesystem refused), 'closed' (accepted, then closed unanswered) or 'answered' (HTTP/2)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        outcome = "error"
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(TIMEOUT_S)
                try:
                    connection.connect(path)
                except PermissionError:
                    outcome = "no access"
                else:
                    try:
                        connection.sendall(HTTP2_PREFACE)
                        reply = connection.recv(9)
                    except (BrokenPipeError, ConnectionResetError):  # closed before or after the preface
                        reply = b""
                    outcome = "answered" if len(reply) == 9 and reply[3] == 4 else "closed"
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            outcome = f"error {error!r}"
        finally:
            os.write(write_end, outcome.encode())
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        outcome = reader.read().decode()
    os.waitpid(pid, 0)
    return outcome


needs_root = pytest.mark.skipif(os.getuid() != 0, reason="switching to another uid (nobody) needs root")


@needs_root
def test_a_uid_outside_the_allow_list_is_refused_even_when_the_socket_is_reachable(tmp_path):
    with start_sidecar(workers=1, demo_hosts=50) as running:
        public = running.state_target.removeprefix("unix:")
        assert mode(public) == 0o600 and mode(os.path.dirname(public)) == 0o700
        assert probe_as(NOBODY, public) == "no access"
        # Opened up by hand: the kernel lets nobody in, the peer-uid check does not.
        os.chmod(os.path.dirname(public), 0o711)
        os.chmod(public, 0o666)
        assert probe_as(NOBODY, public) == "closed"
        assert probe_as(NOBODY, private_socket_path(public)) == "no access"
        assert f"refused a connection from uid {NOBODY}" in running.log()
        with StateClient(running.state_target) as state:  # root still gets through
            assert state.status(timeout=TIMEOUT_S).host_count == 50


@needs_root
def test_an_allowed_uid_gets_through_and_the_sidecars_own_is_refused_when_not_listed(tmp_path):
    with tempfile.TemporaryDirectory() as socket_dir, \
            serve(tmp_path, "--state-listen", f"unix:{socket_dir}/state.sock", "--state-allow-uid", "nobody") as \
            (_process, _target, log_path):
        os.chmod(socket_dir, 0o711)  # pytest's tmp_path is under a directory nobody may enter
        public = Path(socket_dir) / "state.sock"
        assert mode(public) == 0o666  # others are admitted: the uid check is the gate
        assert probe_as(NOBODY, str(public)) == "answered"
        with StateClient(f"unix:{public}") as state:
            with pytest.raises(grpc.RpcError) as refused:
                state.status(timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "refused a connection from uid 0" in log_path.read_text()


@pytest.mark.parametrize("content, problem", [
    ("short-token conductor\n", "line 1: a token needs at least 16 characters"),
    (f"# comment\n{CONDUCTOR_TOKEN}\n", "line 2: expected TOKEN IDENTITY"),
    (f"{CONDUCTOR_TOKEN} conductor\n{CONDUCTOR_TOKEN} other\n", "line 2: the same token as an earlier line"),
    ("# nothing but a comment\n", "holds no token"),
])
def test_a_bad_tokens_file_stops_the_start_naming_the_line_not_the_token(tmp_path, content, problem):
    tokens = tmp_path / "tokens"
    tokens.write_text(content)
    result = placecheck("serve", "--listen", "127.0.0.1:0", "--metrics-port", "0", "--workers", "1",
                        "--state-dir", str(tmp_path / "state"), "--tokens-file", str(tokens))
    assert result.returncode == 2
    assert problem in result.stderr
    assert CONDUCTOR_TOKEN not in result.stderr and "short-token" not in result.stderr


def test_tls_files_must_come_together_and_hold_pem(tmp_path, pki):
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    for args, problem in ((("--tls-cert", str(pki["server"].certificate)), "--tls-cert and --tls-key go together"),
                          (("--tls-client-ca", str(pki["ca"])), "--tls-client-ca needs --tls-cert and --tls-key"),
                          (("--tls-cert", str(not_pem), "--tls-key", str(pki["server"].key)), "holds no PEM block")):
        result = placecheck("serve", "--listen", "127.0.0.1:0", "--metrics-port", "0", "--workers", "1",
                            "--state-dir", str(tmp_path / "state"), *args)
        assert result.returncode == 2 and problem in result.stderr, result.stderr
