"""What the engine answers: verdicts, rejections with their numbers, rankings."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class Rejection:
    rule: str  # stable rule name, e.g. "resource:MEMORY_MB"
    reason: str  # stable UPPER_SNAKE code, a constant beside its rule
    message: str  # human words with the numbers
    numbers: dict[str, float] = field(default_factory=dict)  # keys: RejectionNumbers' fields


@dataclass(frozen=True)
class HostVerdict:
    host: str
    rejections: tuple[Rejection, ...]
    rules_evaluated: tuple[str, ...]

    @property
    def allowed(self) -> bool:
        return not self.rejections


class WeigherScore(NamedTuple):
    """Ten per ranked host: a named tuple, built several times faster than a frozen dataclass."""

    weigher: str
    raw: float
    normalized: float
    multiplier: float

    @property
    def contribution(self) -> float:
        return self.multiplier * self.normalized


@dataclass(frozen=True)
class WeighedHost:
    host: str
    weight: float
    weighers: tuple[WeigherScore, ...] = ()


@dataclass(frozen=True)
class InstancePlacement:
    selected: WeighedHost
    alternates: tuple[WeighedHost, ...] = ()


@dataclass(frozen=True)
class FilterSummary:
    hosts_evaluated: int
    hosts_passed: int
    eliminations: tuple[tuple[str, int], ...]  # (rule, hosts refused), most first
    instances_requested: int
    instances_placed: int

    @property
    def message(self) -> str:
        counts = ", ".join(f"{n} {rule}" for rule, n in self.eliminations if n)
        line = f"{self.hosts_passed}/{self.hosts_evaluated} hosts fit"
        return f"{line}: {counts}" if counts else line


@dataclass(frozen=True)
class CheckResult:
    verdicts: tuple[HostVerdict, ...]
    profile: str


@dataclass(frozen=True)
class SelectResult:
    placements: tuple[InstancePlacement, ...]  # empty when fewer hosts fit than instances
    summary: FilterSummary
    profile: str
