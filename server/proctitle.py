"""Process titles, so `ps` and /proc/PID/cmdline show placecheck-supervisor, placecheck-forkserver
and placecheck-worker-N rather than `python -B -c from multiprocessing.forkserver ...`."""
from __future__ import annotations

from setproctitle import setproctitle


def set_process_title(role: str) -> None:
    setproctitle(f"placecheck-{role}")
