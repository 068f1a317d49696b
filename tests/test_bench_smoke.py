"""`python -m bench --quick` runs every section end to end, so the benchmark cannot rot.

No figure is asserted against a threshold (these machines are noisy): only that
every section reported, with its baseline, and that the kernel agrees with its
reference and the echo server answers.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("1 kernel", "3 select in-process", "4 gRPC end to end", "5 scaling", "6 snapshot", "7 bandwidth",
            "9 state path", "10 NUMA/PCI")


def test_quick_bench_reports_every_section(tmp_path):
    output = tmp_path / "results.md"
    finished = subprocess.run([sys.executable, "-m", "bench", "--quick", "--output", str(output)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-4000:]
    table = output.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| section")]
    for section in SECTIONS:
        assert any(row.startswith(f"| {section} |") for row in rows), f"no {section!r} row in:\n{table}"
    disagreements = [int(count) for count in re.findall(r"(\d+) disagreements", table)]
    assert disagreements and not any(disagreements), table
    assert "targets met" in table


def test_echo_server_replies_with_the_size_asked():
    import grpc

    from bench.echo_server import METHOD, echo_request, start

    server, port = start("127.0.0.1:0", threads=2)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = channel.unary_unary(METHOD)(echo_request(100, 1234), timeout=10)
        assert len(reply) == 1234
    finally:
        server.stop(0)
