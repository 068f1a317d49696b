"""Who may call the sidecar: TLS credentials, caller authentication and authorization.

Over TCP a caller is identified either by its client certificate (mutual TLS: the identities
gRPC reads from the verified certificate, its subject alternative names or else its common
name) or by a bearer token (`authorization: Bearer <token>` metadata) listed in the tokens
file. A call without either is UNAUTHENTICATED; a token not in the file, or an identity the
service does not admit, is PERMISSION_DENIED. Health checks need no identity (probes). Tokens
are compared in constant time and never logged.

The unix state socket is guarded by the kernel instead: see server/state_socket.py.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from dataclasses import dataclass

import grpc

log = logging.getLogger(__name__)

HEALTH_METHOD_PREFIX = "/grpc.health.v1.Health/"
# A token shorter than this is refused when the file is read: it could be guessed.
MIN_TOKEN_CHARS = 16
# Refused calls are logged at most this often per (reason, caller), so a caller cannot flood the log.
REFUSAL_LOG_INTERVAL_S = 60.0


class SecurityConfigError(ValueError):
    """A TLS or tokens file that cannot be used."""


@dataclass(frozen=True)
class TlsMaterial:
    """PEM bytes, read once by the supervisor so every worker (restarted ones too) uses the same."""

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None  # client certificates required and verified against it

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials([(self.private_key, self.certificate_chain)],
                                           root_certificates=self.client_ca,
                                           require_client_auth=self.client_ca is not None)


def read_pem(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            content = file.read()
    except OSError as error:
        raise SecurityConfigError(f"{what} {path}: {error.strerror}") from None
    if b"-----BEGIN " not in content:
        raise SecurityConfigError(f"{what} {path} holds no PEM block")
    return content


def read_tls(cert_path: str | None, key_path: str | None, client_ca_path: str | None) -> TlsMaterial | None:
    if not cert_path and not key_path:
        if client_ca_path:
            raise SecurityConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (cert_path and key_path):
        raise SecurityConfigError("--tls-cert and --tls-key go together")
    return TlsMaterial(read_pem(cert_path, "--tls-cert"), read_pem(key_path, "--tls-key"),
                       read_pem(client_ca_path, "--tls-client-ca") if client_ca_path else None)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Tokens:
    """SHA-256 of each token -> the identity it stands for (the tokens themselves are not kept)."""

    identities: tuple[tuple[bytes, str], ...] = ()

    def identity(self, token: str) -> str | None:
        """The token's identity; every entry is compared, so the time taken says nothing of which matched."""
        presented, found = _digest(token), None
        for digest, identity in self.identities:
            if hmac.compare_digest(digest, presented):
                found = identity
        return found


def read_tokens(path: str) -> Tokens:
    """The tokens file: one `TOKEN IDENTITY` per line; blank lines and lines starting with # skipped.
    Errors name the line, never the token."""
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SecurityConfigError(f"--tokens-file {path}: {getattr(error, 'strerror', None) or error}") from None
    entries: dict[bytes, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise SecurityConfigError(f"{path} line {number}: expected TOKEN IDENTITY")
        token, identity = fields
        if len(token) < MIN_TOKEN_CHARS:
            raise SecurityConfigError(f"{path} line {number}: a token needs at least {MIN_TOKEN_CHARS} characters")
        if _digest(token) in entries:
            raise SecurityConfigError(f"{path} line {number}: the same token as an earlier line")
        entries[_digest(token)] = identity
    if not entries:
        raise SecurityConfigError(f"--tokens-file {path} holds no token")
    return Tokens(tuple(entries.items()))


@dataclass(frozen=True)
class AccessPolicy:
    """Who may call a server's services (health excepted).

    `allowed`: the identities admitted; None admits every authenticated caller."""

    tokens: Tokens | None
    allowed: frozenset[str] | None = None


class _RefusalLog:
    """At most one log line per (reason, caller) per REFUSAL_LOG_INTERVAL_S."""

    def __init__(self):
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}

    def __call__(self, reason: str, caller: str, method: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get((reason, caller), -REFUSAL_LOG_INTERVAL_S) < REFUSAL_LOG_INTERVAL_S:
                return
            if len(self._last) > 1024:  # forget old callers rather than grow without bound
                self._last.clear()
            self._last[(reason, caller)] = now
        log.warning("refused %s from %s: %s (further such refusals of this caller are not logged for %.0fs)",
                    method, caller, reason, REFUSAL_LOG_INTERVAL_S)


class Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _bearer_token(metadata) -> str | None:
    """The token of the `authorization` metadata; None when absent. A value that is not
    `Bearer <token>` is refused: credentials were meant, but none can be read."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        return None
    scheme, _, token = values[0].partition(" ")
    if len(values) > 1 or scheme.lower() != "bearer" or not token.strip():
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, "the authorization metadata must be one 'Bearer <token>'")
    return token.strip()


def caller_identity(policy: AccessPolicy, metadata, peer_identities) -> str:
    """The caller's identity under `policy`, or Refused with the status to answer."""
    token = _bearer_token(metadata)
    if token is not None:
        identity = policy.tokens.identity(token) if policy.tokens else None
        if identity is None:
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, "the bearer token is not recognised")
        candidates = [identity]
    elif peer_identities:
        candidates = [name.decode(errors="replace") for name in peer_identities]
    else:
        raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                      "no credentials: send 'authorization: Bearer <token>' or a client certificate")
    if policy.allowed is None:
        return candidates[0]
    for candidate in candidates:
        if candidate in policy.allowed:
            return candidate
    raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"identity {candidates[0][:128]!r} may not call this service")


class AuthInterceptor(grpc.ServerInterceptor):
    """Checks every call but health checks against an AccessPolicy before its handler runs."""

    def __init__(self, policy: AccessPolicy):
        self._policy = policy
        self._log_refusal = _RefusalLog()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(HEALTH_METHOD_PREFIX):
            return handler
        metadata = handler_call_details.invocation_metadata

        def guarded(behaviour):
            def call(request_or_iterator, context):
                try:
                    caller_identity(self._policy, metadata, context.peer_identities())
                except Refused as refusal:
                    # By address, not port: a caller reconnecting must not earn a log line each time.
                    self._log_refusal(str(refusal), context.peer().rpartition(":")[0], method)
                    context.abort(refusal.code, str(refusal))
                return behaviour(request_or_iterator, context)
            return call

        kind = ("unary_unary" if not handler.request_streaming and not handler.response_streaming else
                "unary_stream" if not handler.request_streaming else
                "stream_unary" if not handler.response_streaming else "stream_stream")
        make = getattr(grpc, f"{kind}_rpc_method_handler")
        return make(guarded(getattr(handler, kind)), request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)
