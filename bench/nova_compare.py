"""Section 2: Nova's own filter and weigher classes against placecheck in process.

Nova (pip package `nova`, the version the conformance data was made with) lives in
its own virtual environment, bench/.venv-nova, made once and reused. The fleet
and request go to bench/nova_side.py, run by that environment's Python, as a
conformance-case-shaped JSON payload; it times only Nova's filter + weigh call.
Both sides run the same rules: the profile's rules that Nova has a filter class
for (Placement's rules run in Placement's database, not in Nova's scheduler).
Both give their passing hosts and ranking, which must agree.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import workload
from bench.timing import Figure, format_ratio, format_seconds, median, sample_calls
from placecheck_engine.config import Profile
from placecheck_engine.decide import check_destination, select_destinations
from placecheck_engine.model import Fleet, Request
from placecheck_engine.weighers import WEIGHERS

NOVA_VENV = Path(__file__).resolve().parent / ".venv-nova"
NOVA_REQUIREMENT = "nova==34.0.0"
NOVA_SIDE = Path(__file__).resolve().parent / "nova_side.py"
SPEEDUP_TARGET = 10_000
# Profile fields that are placecheck's own, not Nova options.
NOT_NOVA_OPTIONS = ("name", "enabled_filters", "extra")


def nova_python(install: bool) -> Path | None:
    """The Nova venv's interpreter; made (once) when `install`, else None when absent."""
    python = NOVA_VENV / "bin" / "python"
    installed = NOVA_VENV / ".installed"
    if installed.exists():
        return python
    if not install:
        return None
    print(f"bench: installing {NOVA_REQUIREMENT} into {NOVA_VENV} (once)...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(NOVA_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    NOVA_REQUIREMENT], check=True)
    installed.write_text(NOVA_REQUIREMENT + "\n")
    return python


def _jsonable(value):
    """Model values as the conformance cases spell them (lists, strings, plain dicts)."""
    if dataclasses.is_dataclass(value):
        return {field.name: _jsonable(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (frozenset, set)):
        return sorted(_jsonable(item) for item in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def payload(fleet: Fleet, request: Request, profile: Profile, repeats: int) -> dict:
    request_json = _jsonable(request)
    group = request_json["server_group"]
    if group is not None:
        # Nova keeps max_server_per_host among the group's rules.
        group["rules"] = {"max_server_per_host": group.pop("max_server_per_host")}
    options = {field.name: getattr(profile, field.name) for field in dataclasses.fields(profile)
               if field.name not in NOT_NOVA_OPTIONS}
    return {
        "hosts": _jsonable(fleet.hosts),
        "aggregates": _jsonable(fleet.aggregates),
        "request": request_json,
        "config": _jsonable({**options, **profile.extra}),
        "filters": list(profile.enabled_filters),
        "weighers": [weigher.name for weigher in WEIGHERS],
        "repeats": repeats,
        "ranked": profile.max_attempts,
    }


def run_nova(python: Path, payload_: dict, script: str = NOVA_SIDE.name) -> dict:
    """Runs bench/<script> in Nova's venv on the payload; its JSON answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="placecheck-nova-") as file:
        json.dump(payload_, file)
        file.flush()
        finished = subprocess.run([str(python), str(NOVA_SIDE.parent / script), file.name],
                                  capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{finished.stderr[-4000:]}")
    return json.loads(finished.stdout)


@dataclasses.dataclass(frozen=True)
class Comparison:
    hosts: int
    filters: tuple[str, ...]
    nova_seconds: list[float]
    placecheck_seconds: list[float]
    nova_passed: int
    placecheck_passed: int
    passing_agree: int  # hosts both pass or both refuse
    ranking_agrees: bool  # the same best hosts, in order
    nova_version: str


def measure(python: Path, hosts: int, repeats: int, min_seconds: float) -> Comparison:
    fleet = workload.fleet(hosts)
    columns = workload.columns(hosts)
    request = workload.request(hosts)
    full_profile = workload.profile()
    nova = run_nova(python, payload(fleet, request, full_profile, repeats))
    # The rules both sides run: those Nova has a filter class for.
    profile = dataclasses.replace(full_profile, enabled_filters=tuple(nova["filters_run"]))

    placecheck_seconds = sample_calls(lambda: select_destinations(columns, request, profile, "bench", None),
                                      min_seconds=min_seconds, min_calls=20)
    verdicts = check_destination(columns, request, profile, [host.name for host in fleet.hosts]).verdicts
    placecheck_passing = {verdict.host for verdict in verdicts if verdict.allowed}
    nova_passing = set(nova["passed"])
    agree = sum((host.name in placecheck_passing) == (host.name in nova_passing) for host in fleet.hosts)
    selected = select_destinations(columns, request, profile, "bench", None).placements[0]
    placecheck_ranked = [selected.selected.host] + [alternate.host for alternate in selected.alternates]
    nova_ranked = [host for host, _ in nova["ranked"]][:len(placecheck_ranked)]
    return Comparison(hosts, tuple(nova["filters_run"]), nova["seconds"], placecheck_seconds,
                      len(nova_passing), len(placecheck_passing), agree, placecheck_ranked == nova_ranked,
                      nova["nova_version"])


def figures(comparison: Comparison) -> list[Figure]:
    nova_s, placecheck_s = median(comparison.nova_seconds), median(comparison.placecheck_seconds)
    speedup = nova_s / placecheck_s
    return [
        Figure("2 vs Nova", f"filter + weigh, {comparison.hosts:,} hosts, {len(comparison.filters)} filters, "
                            f"{len(WEIGHERS)} weighers", format_seconds(placecheck_s),
               f"Nova {comparison.nova_version} filter+weigh handlers", format_seconds(nova_s),
               f"{format_ratio(speedup)} faster", f">= {SPEEDUP_TARGET:,}x", speedup >= SPEEDUP_TARGET,
               ", ".join(comparison.filters)),
        Figure("2 vs Nova", "same passing hosts", f"{comparison.passing_agree:,}/{comparison.hosts:,} agree",
               "Nova passes", f"{comparison.nova_passed:,} hosts",
               f"placecheck passes {comparison.placecheck_passed:,}", "all agree",
               comparison.passing_agree == comparison.hosts,
               "same top host and alternates, in order" if comparison.ranking_agrees
               else "ranking (top host and alternates) differs"),
    ]
