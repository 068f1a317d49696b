"""The fleet-state unix socket, reachable by the allowed uids only.

grpcio tells a Python servicer nothing of a unix-socket peer's credentials (grpc/grpc#15511,
#28755), so the check is made when a connection is accepted: the supervisor listens on the
public socket itself, reads each connection's peer uid with SO_PEERCRED and relays an allowed
connection, byte for byte, to the gRPC server's private socket (in a 0700 directory beside the
public one); any other connection is closed at once (its caller sees UNAVAILABLE) and the uid
is logged. One thread relays each connection, at most MAX_RELAYED_CONNECTIONS at once, and
ends with it.

The public socket is 0600 (0666 when --state-allow-uid admits uids other than the sidecar's
own and root: the uid check is the gate then) in a directory that must be the sidecar user's
own and writable by nobody else, so no other user can squat or replace the socket.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import select
import socket
import stat
import struct
import threading
import time

log = logging.getLogger(__name__)

MAX_RELAYED_CONNECTIONS = 32
RELAY_CHUNK_BYTES = 1 << 20
PRIVATE_DIR = ".grpc"  # short: a unix socket path holds at most 107 bytes
# At most one log line per refused uid this often: a local user cannot flood the log.
REFUSAL_LOG_INTERVAL_S = 60.0
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
RELAY_ADDRESS_PREFIX = "placecheck-relay/"


class SocketDirError(Exception):
    """The socket's directory is not private to this user."""


def default_allowed_uids() -> frozenset[int]:
    return frozenset({os.getuid(), 0})


def private_directory(directory: str, mode: int = 0o700) -> None:
    """Create `directory` with `mode`, or accept an existing one that this user owns and nobody
    else can write to (so nobody else can place or replace a socket in it)."""
    try:
        os.mkdir(directory, mode)
        os.chmod(directory, mode)  # mkdir's mode is filtered by the umask
        return
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(directory), mode=0o700, exist_ok=True)
        return private_directory(directory, mode)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise SocketDirError(f"{directory} is not a directory")
    if info.st_uid != os.getuid():
        raise SocketDirError(f"{directory} belongs to uid {info.st_uid}, not to this user ({os.getuid()}): "
                             "the state socket needs a directory of its own")
    if info.st_mode & 0o022:
        raise SocketDirError(f"{directory} is writable by others (mode {stat.S_IMODE(info.st_mode):04o}), who "
                             "could replace the state socket: use a directory only this user can write")


def private_socket_path(public_path: str) -> str:
    """Where gRPC itself listens: a 0700 directory beside the public socket."""
    directory, name = os.path.split(os.path.abspath(public_path))
    return os.path.join(directory, PRIVATE_DIR, name)


def peer_uid(connection: socket.socket) -> int:
    return _PEERCRED.unpack(connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))[1]


class StateSocketRelay:
    """Accepts on `public_path` (already bound by the caller's directory rules) and relays
    connections from `allowed_uids` to `private_path`."""

    def __init__(self, public_path: str, private_path: str, allowed_uids: frozenset[int]):
        self.public_path = public_path
        self._private_path = private_path
        self._allowed = allowed_uids
        self._slots = threading.BoundedSemaphore(MAX_RELAYED_CONNECTIONS)
        self._refusals_logged: dict[int, float] = {}
        self._relayed = itertools.count()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(public_path)
            # Bound with the umask's mode in a directory nobody else can enter; narrowed before
            # anyone can connect (listen comes after).
            os.chmod(public_path, 0o600 if allowed_uids <= default_allowed_uids() else 0o666)
            self._listener.listen(64)
        except BaseException:
            self._listener.close()
            raise
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="state-relay-accept", daemon=True)
        self._acceptor.start()

    def close(self) -> None:
        """Stop accepting; relays end with their connections (the gRPC server closes its side)."""
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._acceptor.join()
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.public_path)

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                if self._closed:
                    return
                time.sleep(0.01)  # EMFILE and the like: try again shortly
                continue
            try:
                uid = peer_uid(connection)
            except OSError:  # nothing known of the peer: not admitted
                connection.close()
                continue
            if uid not in self._allowed:
                self._log_refusal(uid)
                connection.close()
                continue
            if not self._slots.acquire(blocking=False):
                log.warning("state socket: %d connections relayed already; refusing uid %d's",
                            MAX_RELAYED_CONNECTIONS, uid)
                connection.close()
                continue
            threading.Thread(target=self._relay, args=(connection, uid), name="state-relay", daemon=True).start()

    def _log_refusal(self, uid: int) -> None:
        now = time.monotonic()
        if now - self._refusals_logged.get(uid, -REFUSAL_LOG_INTERVAL_S) >= REFUSAL_LOG_INTERVAL_S:
            if len(self._refusals_logged) > 1024:
                self._refusals_logged.clear()
            self._refusals_logged[uid] = now
            log.warning("state socket: refused a connection from uid %d (not in --state-allow-uid)", uid)

    def _relay(self, client: socket.socket, uid: int) -> None:
        try:
            with client, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
                # From an abstract address naming the uid: gRPC shows it as the call's peer
                # (unix-abstract:placecheck-relay/...), which the audit log records as who wrote.
                # Random, so another local user cannot take the name first and so refuse the write.
                server.bind(f"\0{RELAY_ADDRESS_PREFIX}{os.getpid()}/{next(self._relayed)}/"
                            f"{secrets.token_hex(8)}/uid={uid}")
                server.connect(self._private_path)
                peers = {client.fileno(): server, server.fileno(): client}
                poller = select.poll()
                for fd in peers:
                    poller.register(fd, select.POLLIN)
                buffer = memoryview(bytearray(RELAY_CHUNK_BYTES))
                while True:
                    for fd, _event in poller.poll():
                        received = os.readv(fd, [buffer])
                        if not received:
                            return  # either side closed: close both
                        peers[fd].sendall(buffer[:received])
        except OSError as error:
            log.debug("state socket relay ended: %s", error)
        finally:
            self._slots.release()
