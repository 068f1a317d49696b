"""What a supervisor keeps in its state directory besides the store: a lock and a record of what
it made, so that a successor on the same directory can remove what a dead one left behind.

`supervisor.lock` is flock'ed for the supervisor's lifetime (the kernel releases it when the
process dies, however it dies), so holding it proves any recorded predecessor is gone.
`supervisor.json` names the predecessor's snapshot prefix, metrics directory, state socket
and workers (pid and start time, so a reused pid is never taken for a worker).
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import logging
import os
import shutil
import signal
import time

from placecheck_engine.snapshot import SHM_DIR

log = logging.getLogger(__name__)

LOCK_FILE = "supervisor.lock"
RECORD_FILE = "supervisor.json"
ORPHAN_POLL_S = 0.05


class StateDirBusy(Exception):
    """Another supervisor runs on this state directory."""


def lock_state_dir(directory: str) -> int:
    """The locked file descriptor; closing it (or dying) releases the directory."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirBusy(f"another placecheck serve runs on state directory {directory}") from None
    return fd


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class RunRecord:
    """This supervisor's record, rewritten atomically as it changes."""

    def __init__(self, directory: str, snapshot_prefix: str, metrics_dir: str, state_socket: str | None):
        self._path = os.path.join(directory, RECORD_FILE)
        self._content = {"pid": os.getpid(), "snapshot_prefix": snapshot_prefix, "metrics_dir": metrics_dir,
                         "state_socket": state_socket, "workers": {}}
        self._write()

    def worker_started(self, index: int, pid: int) -> None:
        self._content["workers"][str(index)] = [pid, process_start_time(pid)]
        self._write()

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)

    def _write(self) -> None:
        staging = self._path + ".new"
        with open(staging, "w") as file:
            json.dump(self._content, file)
        os.replace(staging, self._path)


def clean_up_after_predecessor(directory: str, stop_timeout_s: float) -> str | None:
    """Stop a dead predecessor's orphaned workers; remove its segments and metrics directory.
    Returns its state socket's path (if any) for the caller to remove when nobody listens on it.

    Call with the state directory locked (so the predecessor is dead)."""
    path = os.path.join(directory, RECORD_FILE)
    try:
        with open(path) as file:
            record = json.load(file)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        log.warning("ignoring unreadable %s: %s", path, error)
        return None
    log.warning("supervisor pid %s did not stop cleanly; removing what it left", record.get("pid"))
    stop_orphans([(pid, started) for pid, started in record.get("workers", {}).values()], stop_timeout_s)
    prefix = record.get("snapshot_prefix")
    if prefix:
        for segment in glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + ".*")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(segment)
    if record.get("metrics_dir"):
        shutil.rmtree(record["metrics_dir"], ignore_errors=True)
    os.unlink(path)
    return record.get("state_socket")


def stop_orphans(workers: list[tuple[int, int]], timeout_s: float) -> None:
    """SIGTERM the workers still running (they drain, then exit); SIGKILL any left at the deadline."""
    alive = [pid for pid, started in workers if started is not None and process_start_time(pid) == started]
    for pid in alive:
        log.warning("stopping orphaned worker pid %d", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive and time.monotonic() < deadline:
        time.sleep(ORPHAN_POLL_S)
        alive = [pid for pid in alive if running(pid)]
    for pid in alive:
        log.error("orphaned worker pid %d did not stop in time; killing it", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """Not gone and not a zombie (an orphan's zombie lingers until init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
