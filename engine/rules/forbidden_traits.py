"""Placement's forbidden traits, flavor `trait:NAME=forbidden` extra specs included."""
from __future__ import annotations

from placecheck_engine import _fastfilters
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.host_rows import listed
from placecheck_engine.rules.required_traits import TraitParams, compile_trait_mask
from placecheck_engine.verdict import Rejection

HAS_FORBIDDEN_TRAIT = "HAS_FORBIDDEN_TRAIT"


class ForbiddenTraits(Rule):
    name = "ForbiddenTraits"

    def compile(self, request, columns, profile) -> list[Active]:
        _, forbidden = request.traits_from_extra_specs()
        return [compile_trait_mask(self, forbidden, columns)]

    def kernel(self, active, columns):
        # A forbidden trait no host has forbids nothing: only the known ones are in the mask.
        return _fastfilters.ForbiddenTraitsKernel(columns.arrays["traits"], active.params.mask)

    def explain(self, active, columns, row, placed) -> Rejection:
        present = active.params.traits & set(columns.traits_of(row))
        return Rejection(active.name, HAS_FORBIDDEN_TRAIT,
                         f"the host has forbidden traits: {listed(present)}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        _, forbidden = request.traits_from_extra_specs()
        return not forbidden & host.traits
