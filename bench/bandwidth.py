"""Section 7: bytes per host a full scan touches, its effective bandwidth, and the
machine's memory bandwidth from a plain numpy copy in the same run.

Which columns the active rules read is found by experiment rather than kept in a
list that could drift from the rules: for each column (each resource class's row
of the rc_* arrays), a forked child makes that column's memory unreadable
(mprotect PROT_NONE) and runs the full scan; the column is read if the child
dies of SIGSEGV.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import resource
import signal
import time

import numpy as np

from bench import workload
from bench.kernel import active_rules, scan_chain
from bench.timing import Figure, format_bytes, format_ratio

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
PROT_NONE = 0  # <sys/mman.h>
FAIL_BITS_ITEM_BYTES = 8  # engine.decide's per-row uint64
MPROTECT_FAILED = 3  # the probe child's exit status when it could not protect the column


def _column_slices(name: str, array: np.ndarray, hosts: int):
    """(label, contiguous part) of an array: each resource class's row of an [R, n] array, else all of it."""
    if array.ndim == 2 and array.shape[1] == hosts and array.shape[0] != hosts:
        for first in range(array.shape[0]):
            yield f"{name}[{first}]", array[first]
    else:
        yield name, array


def _scan_reads(part: np.ndarray, actives, columns, hosts: int) -> bool:
    """Does the full scan read any whole page inside `part`? (Parts under two pages cannot tell.)"""
    start = part.ctypes.data
    first_page = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    last_page = (start + part.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
    if last_page <= first_page:
        return False
    pid = os.fork()
    if pid == 0:  # the child: protect, scan, and exit without ever returning into the caller
        code = MPROTECT_FAILED
        try:
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a SIGSEGV here is expected: no core file
            if _libc.mprotect(first_page, last_page - first_page, PROT_NONE) == 0:
                scan_chain(actives, columns, np.zeros(hosts, dtype=np.uint64))
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == MPROTECT_FAILED:
        raise RuntimeError("the column-read probe could not protect a column")
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSEGV


def columns_read(hosts: int) -> dict[str, float]:
    """Bytes per host of every column the active rules' full scan reads, by column."""
    columns = workload.columns(hosts)
    actives = active_rules(hosts)
    return {label: part.nbytes / hosts
            for name, array in columns.arrays.items()
            for label, part in _column_slices(name, array, hosts)
            if _scan_reads(part, actives, columns, hosts)}


def copy_bandwidth(array_bytes: int, runs: int) -> float:
    """Memory traffic (bytes read + bytes written) per second of np.copyto between two arrays."""
    source = np.ones(array_bytes // 8, dtype=np.float64)
    target = np.zeros_like(source)  # both faulted in before timing
    fastest = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        np.copyto(target, source)
        fastest = min(fastest, time.perf_counter() - started)
    return 2 * array_bytes / fastest


def figures(read: dict[str, float], hosts: int, rule_passes: int, chain_seconds: float,
            copy_traffic: float) -> list[Figure]:
    bytes_per_host = sum(read.values())
    scan_bandwidth = bytes_per_host * hosts / chain_seconds
    # Each rule's pass also reads and writes its row's uint64 in fail_bits.
    traffic_per_host = bytes_per_host + rule_passes * 2 * FAIL_BITS_ITEM_BYTES
    traffic_bandwidth = traffic_per_host * hosts / chain_seconds
    return [
        Figure("7 bandwidth", "bytes per host a full scan reads", f"{bytes_per_host:g} B/host", "-", "-",
               "-", "-", None, ", ".join(f"{name} {size:g}" for name, size in read.items())),
        Figure("7 bandwidth", f"full-scan effective bandwidth, columns only, {hosts:,} hosts "
                              f"({format_bytes(bytes_per_host * hosts)} read)",
               f"{scan_bandwidth / 1e9:.1f} GB/s", "numpy copy (read+write traffic)",
               f"{copy_traffic / 1e9:.1f} GB/s", f"{format_ratio(scan_bandwidth / copy_traffic)} of copy", "-", None),
        Figure("7 bandwidth", f"full-scan memory traffic with fail_bits ({rule_passes} passes x "
                              f"{2 * FAIL_BITS_ITEM_BYTES} B/host), {hosts:,} hosts",
               f"{traffic_bandwidth / 1e9:.1f} GB/s", "numpy copy (read+write traffic)",
               f"{copy_traffic / 1e9:.1f} GB/s", f"{format_ratio(traffic_bandwidth / copy_traffic)} of copy",
               "-", None, f"{traffic_per_host:g} B/host moved"),
    ]
