"""The contract every rule keeps.

A rule is one class in one module of engine/rules/, named as Nova names it
(or `resource:<CLASS>` for Placement's capacity rule). Side by side in its module:
  validate   what Nova's API refuses before scheduling, if anything (InvalidField)
  compile    request -> parameters for the kernel (once per request, no host loop)
  kernel     the compiled predicate bound to the columns (engine/kernel.pxi, the rule's .pxi):
             one predicate serves CheckDestination, one row, and SelectDestinations, every row
  scan       the predicate over a row range: the kernel's, or the rule's own Python where
             part of it is decided in Python
  explain    the rejection of one row, with its numbers
  reference  the same rule in plain Python over engine.model, for property tests
and its reason codes as constants.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from placecheck_engine.model import Fleet, Host, Request
from placecheck_engine.verdict import Rejection


@dataclass(frozen=True)
class Active:
    """A rule compiled for one request. `params` is None when the request does
    not engage the rule (no hint, no group...): it then passes every host."""

    rule: "Rule"
    name: str
    params: Any = None


class Rule:
    name: ClassVar[str]
    # Whether compile reads request.instance_uuid: a compiled request is reused for a request
    # that differs only in it (engine.decide), with such rules compiled again (for_instance).
    reads_instance_uuid: ClassVar[bool] = False

    def validate(self, request: Request, columns, profile) -> None:
        """Nova's API-side refusal of the whole request before it schedules (an unknown zone):
        raise InvalidField. Most rules have none."""

    def compile(self, request: Request, columns, profile) -> list[Active]:
        """Usually one Active; the resource family gives one per requested class."""
        raise NotImplementedError

    def for_instance(self, active: Active, request: Request, columns, profile) -> Active:
        """`active`, compiled for a request that differs from this one only in its instance_uuid,
        made this request's (rules that read it: reads_instance_uuid)."""
        (compiled,) = self.compile(request, columns, profile)
        return compiled

    def kernel(self, active: Active, columns):
        """The rule's compiled predicate bound to these columns (an engine/kernel.pxi Kernel), made
        once per request and generation; None when the rule is scanned in Python (its own scan)."""
        return None

    def scan(self, active: Active, columns, fail_bits: np.ndarray, bit: int,
             start: int, stop: int, placed: int) -> int:
        """Set `1 << bit` in fail_bits[row] for every refused row in [start, stop);
        return how many rows it refused. `placed` is how many instances this
        request has already put on each of these rows (multi-instance selection)."""
        if active.params is None:
            return 0
        return self.kernel(active, columns).scan(fail_bits, bit, start, stop, placed)

    def explain(self, active: Active, columns, row: int, placed: int) -> Rejection:
        raise NotImplementedError

    def reference(self, active_name: str, host: Host, fleet: Fleet, request: Request,
                  profile, placed: int) -> bool:
        """True when the host passes; plain Python, no columns."""
        raise NotImplementedError
