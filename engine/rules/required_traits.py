"""Placement's required traits, flavor `trait:NAME=required` extra specs included."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.host_rows import listed
from placecheck_engine.verdict import Rejection

MISSING_REQUIRED_TRAIT = "MISSING_REQUIRED_TRAIT"


@dataclass(frozen=True, eq=False)
class TraitParams:
    traits: frozenset[str]
    mask: np.ndarray  # uint64 words over columns' trait bits
    unknown: frozenset[str]  # traits no host in the fleet has


def compile_trait_mask(rule: Rule, traits: frozenset[str], columns) -> Active:
    if not traits:
        return Active(rule, rule.name, None)
    return Active(rule, rule.name, columns.memo("traits", traits, lambda: _trait_params(traits, columns)))


def _trait_params(traits: frozenset[str], columns) -> TraitParams:
    mask = np.zeros(columns.arrays["traits"].shape[1], dtype=np.uint64)
    unknown = set()
    for trait in traits:
        bit = columns.trait_bit(trait)
        if bit is None:
            unknown.add(trait)
        else:
            mask[bit // 64] |= np.uint64(1 << (bit % 64))
    return TraitParams(traits, mask, frozenset(unknown))


def required_traits_kernel(params: TraitParams, columns):
    """Refuses the rows that lack a trait of `params`; every row when no host has one of them.
    The one required-traits kernel: the request filters that add traits use it too."""
    if params.unknown:
        return _fastfilters.RefuseEveryRow(columns.host_count)
    return _fastfilters.RequiredTraitsKernel(columns.arrays["traits"], params.mask)


def missing_traits(params: TraitParams, columns, row: int) -> frozenset[str]:
    return params.traits - set(columns.traits_of(row))


class RequiredTraits(Rule):
    name = "RequiredTraits"

    def compile(self, request, columns, profile) -> list[Active]:
        required, _ = request.traits_from_extra_specs()
        return [compile_trait_mask(self, required, columns)]

    def kernel(self, active, columns):
        return required_traits_kernel(active.params, columns)

    def explain(self, active, columns, row, placed) -> Rejection:
        return Rejection(active.name, MISSING_REQUIRED_TRAIT,
                         f"the host lacks required traits: {listed(missing_traits(active.params, columns, row))}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        required, _ = request.traits_from_extra_specs()
        return required <= host.traits
