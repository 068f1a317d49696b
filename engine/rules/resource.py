"""Placement's capacity rule, one active rule `resource:<CLASS>` per requested class."""
from __future__ import annotations

from dataclasses import dataclass

from placecheck_engine import _fastfilters
from placecheck_engine.columns import LARGEST_MIN_UNIT, LARGEST_STEP, SMALLEST_MAX_UNIT, SMALLEST_STEP
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.verdict import Rejection

INSUFFICIENT_CAPACITY = "INSUFFICIENT_CAPACITY"
NO_INVENTORY = "NO_INVENTORY"
BELOW_MIN_UNIT = "BELOW_MIN_UNIT"
ABOVE_MAX_UNIT = "ABOVE_MAX_UNIT"
NOT_A_STEP_MULTIPLE = "NOT_A_STEP_MULTIPLE"

PREFIX = "resource:"


@dataclass(frozen=True)
class ResourceParams:
    resource_class: str
    index: int | None  # None: no host in the fleet has this class
    amount: int
    units_fit_everywhere: bool  # every host's min_unit, max_unit and step_size allow the amount


def _units_fit_everywhere(columns, index: int | None, amount: int) -> bool:
    if index is None:
        return False
    bounds = columns.arrays["rc_unit_bounds"][index]
    return bool(bounds[LARGEST_MIN_UNIT] <= amount <= bounds[SMALLEST_MAX_UNIT]
                and bounds[SMALLEST_STEP] == bounds[LARGEST_STEP] == 1)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class Resource(Rule):
    name = "resource"

    def compile(self, request, columns, profile) -> list[Active]:
        # Flavors repeat: their actives are compiled once per generation.
        requested = tuple(sorted((rc, amount) for rc, amount in request.resources.items() if amount > 0))
        return list(columns.memo(self.name, requested, lambda: self._actives(requested, columns)))

    def _actives(self, requested: tuple[tuple[str, int], ...], columns) -> tuple[Active, ...]:
        actives = []
        for rc, amount in requested:
            index = columns.resource_class_index(rc)
            params = ResourceParams(rc, index, amount, _units_fit_everywhere(columns, index, amount))
            actives.append(Active(self, PREFIX + rc, params))
        return tuple(actives)

    def kernel(self, active, columns):
        params: ResourceParams = active.params
        if params.index is None:
            return _fastfilters.RefuseEveryRow(columns.host_count)
        arrays, index = columns.arrays, params.index
        return _fastfilters.ResourceKernel(arrays["rc_free"][index], arrays["rc_min_unit"][index],
                                           arrays["rc_max_unit"][index], arrays["rc_step"][index], params.amount,
                                           params.units_fit_everywhere)

    def explain(self, active, columns, row, placed) -> Rejection:
        params: ResourceParams = active.params
        rc, amount, index = params.resource_class, params.amount, params.index
        arrays = columns.arrays
        if index is None or not arrays["rc_present"][index, row]:
            return Rejection(active.name, NO_INVENTORY,
                             f"{rc}: requested {amount}, the host has no {rc} inventory",
                             {"requested": amount})
        total = int(arrays["rc_total"][index, row])
        reserved = int(arrays["rc_reserved"][index, row])
        ratio = float(arrays["rc_ratio"][index, row])
        used = int(arrays["rc_used"][index, row])
        capacity = (total - reserved) * ratio
        free = int(arrays["rc_free"][index, row]) - placed * amount
        numbers = {"requested": amount, "free": free, "capacity": capacity, "used": used,
                   "total": total, "reserved": reserved, "allocation_ratio": ratio}
        min_unit = int(arrays["rc_min_unit"][index, row])
        max_unit = int(arrays["rc_max_unit"][index, row])
        step = int(arrays["rc_step"][index, row])
        if amount < min_unit:
            return Rejection(active.name, BELOW_MIN_UNIT,
                             f"{rc}: requested {amount}, below min_unit {min_unit}",
                             {**numbers, "min_unit": min_unit})
        if amount > max_unit:
            return Rejection(active.name, ABOVE_MAX_UNIT,
                             f"{rc}: requested {amount}, above max_unit {max_unit}",
                             {**numbers, "max_unit": max_unit})
        if step <= 0 or amount % step:
            return Rejection(active.name, NOT_A_STEP_MULTIPLE,
                             f"{rc}: requested {amount}, not a multiple of step_size {step}",
                             {**numbers, "step_size": step})
        already = f", after {placed} placed here by this request" if placed else ""
        message = (f"{rc}: requested {amount}, free {free} of capacity {_number(capacity)} "
                   f"({total}-{reserved} x {_number(ratio)}), used {used}{already}")
        return Rejection(active.name, INSUFFICIENT_CAPACITY, message, numbers)

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        rc = active_name[len(PREFIX):]
        amount = request.resources[rc]
        inventory = host.resources.get(rc)
        if inventory is None:
            return False
        if not inventory.min_unit <= amount <= inventory.max_unit:
            return False
        if inventory.step_size <= 0 or amount % inventory.step_size:
            return False
        return inventory.used + (placed + 1) * amount <= inventory.capacity
