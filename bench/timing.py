"""Shared measurement helpers: repeated timing, percentiles, per-process CPU and
memory from /proc, which worker holds a connection (/proc/net/tcp), and the figure
table every section reports into."""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TCP_ESTABLISHED = "01"


def sample_calls(call: Callable[[], object], *, min_seconds: float, min_calls: int,
                 max_calls: int = 1_000_000) -> list[float]:
    """Seconds per call of `call`, one sample per call, until both minimums are met."""
    samples = []
    started = time.perf_counter()
    while len(samples) < max_calls:
        before = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - before) * 1e-9)
        if len(samples) >= min_calls and time.perf_counter() - started >= min_seconds:
            break
    return samples


def best_of(call: Callable[[], object], *, runs: int, min_seconds: float) -> float:
    """Seconds per call: `call` repeated in batches, the fastest batch's mean.

    For sub-microsecond to millisecond work where timer overhead and one-off
    noise (a page fault, a preemption) would swamp single-call samples."""
    batch = 1
    while True:
        started = time.perf_counter()
        for _ in range(batch):
            call()
        if time.perf_counter() - started >= min_seconds / runs or batch >= 1 << 20:
            break
        batch *= 2
    fastest = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(batch):
            call()
        fastest = min(fastest, (time.perf_counter() - started) / batch)
    return fastest


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction in [0, 1]) of a non-empty sample list."""
    ordered = sorted(samples)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(samples: list[float]) -> float:
    return percentile(samples, 0.5)


def with_spread(samples: list[float], format_: Callable[[float], str]) -> str:
    """The median of repeated measurements, then their range: how far one run may be off."""
    return f"{format_(median(samples))} ({format_(min(samples))} to {format_(max(samples))})"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/<pid>/stat utime, stime)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces; fields resume after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def _smaps_rollup(pid: int) -> dict[str, int]:
    """/proc/<pid>/smaps_rollup's sizes, in bytes, by field name."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) * 1024
    return fields


def pss_bytes(pid: int) -> int:
    """Proportional set size: private pages plus each shared page divided by its sharers."""
    return _smaps_rollup(pid)["Pss"]


def private_bytes(pid: int) -> int:
    """Pages only this process maps (USS): what the machine saves if it exits."""
    fields = _smaps_rollup(pid)
    return fields["Private_Clean"] + fields["Private_Dirty"]


def descendant_pids(pid: int) -> list[int]:
    """A process's children, their children and so on, from /proc/<pid>/task/*/children."""
    descendants = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        for child in children:
            descendants += [int(child), *descendant_pids(int(child))]
    return sorted(descendants)


def _established_tcp() -> dict[int, tuple[int, int]]:
    """Socket inode -> (local port, remote port) of every established TCP connection."""
    connections = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == TCP_ESTABLISHED:
                connections[int(fields[9])] = (int(fields[1].rsplit(":", 1)[1], 16),
                                               int(fields[2].rsplit(":", 1)[1], 16))
    return connections


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def workers_connected_to_us(worker_pids: list[int], port: int) -> set[int]:
    """The workers holding a connection from this process to the decision port."""
    connections = _established_tcp()
    our_ports = {connections[inode][0] for inode in _socket_inodes(os.getpid())
                 if inode in connections and connections[inode][1] == port}
    return {pid for pid in worker_pids
            if any(connections[inode][0] == port and connections[inode][1] in our_ports
                   for inode in _socket_inodes(pid) if inode in connections)}


def machine_description() -> str:
    model = platform.processor() or "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    l3 = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    cache = f", L3 {l3.read_text().strip()}" if l3.exists() else ""
    return (f"{model}, {os.cpu_count()} cores{cache}, Linux {platform.release()}, "
            f"Python {platform.python_version()}")


@dataclass(frozen=True)
class Figure:
    """One measured figure against its baseline measured in the same run.

    `ratio` says which way it divides ("1,234x faster", "1.15x echo");
    `met` is None when the figure has no target."""

    section: str
    name: str
    value: str
    baseline_name: str
    baseline: str
    ratio: str
    target: str
    met: bool | None
    note: str = ""


def format_seconds(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(count: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(count) >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count:.0f} B"


def format_ratio(ratio: float) -> str:
    return f"{ratio:,.0f}x" if ratio >= 100 else f"{ratio:.3g}x"


def render_table(figures: list[Figure]) -> str:
    """The figures as one Markdown table."""
    header = "| section | figure | value | baseline | baseline value | ratio | target | met |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for figure in figures:
        met = {True: "met", False: "**missed**", None: "-"}[figure.met]
        name = f"{figure.name} ({figure.note})" if figure.note else figure.name
        lines.append(f"| {figure.section} | {name} | {figure.value} | {figure.baseline_name} | "
                     f"{figure.baseline} | {figure.ratio} | {figure.target} | {met} |")
    return "\n".join(lines)
