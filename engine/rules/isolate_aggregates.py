"""Nova's request filter isolate_aggregates ([scheduler] enable_isolated_aggregate_filtering): an
aggregate whose metadata holds `trait:NAME=required` keeps out every request that does not
require NAME; its hosts become Placement's forbidden aggregates.

The request's required traits are Nova's ResourceRequest.all_required_traits: the caller's
required traits, flavor `trait:NAME` and `traitS:NAME` (granular groups) extra specs valued
`required`, and the image's `trait:NAME=required` properties. An aggregate isolates when
any of its `trait:*` entries valued exactly `required` names a trait outside that set (Nova's
AggregateList.get_non_matching_by_metadata_keys; compared as SQLite and PostgreSQL compare,
case-sensitively).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.image_meta import image_meta_props
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.host_rows import listed
from placecheck_engine.rules.member_of import aggregate_mask
from placecheck_engine.rules.require_tenant_aggregate import fleet_aggregates
from placecheck_engine.verdict import Rejection

IN_ISOLATED_AGGREGATE = "IN_ISOLATED_AGGREGATE"
TRAIT_KEY_PREFIX = "trait:"
ISOLATING_VALUE = "required"
# Nova's ResourceRequest.XS_KEYPAT for traits of a granular group: trait<suffix>:<name>.
_GRANULAR_TRAIT_KEY = re.compile(r"^trait[a-zA-Z0-9_-]{1,64}:(.*)$")


def all_required_traits(request) -> frozenset[str]:
    """Every trait the request requires, in any request group, as Nova counts them."""
    required, _ = request.traits_from_extra_specs()
    granular = {match.group(1) for key, value in request.flavor.extra_specs.items()
                if value == ISOLATING_VALUE and (match := _GRANULAR_TRAIT_KEY.match(key))}
    image = image_meta_props(request.image.properties).get("traits_required", ()) if request.image else ()
    return required | granular | frozenset(image)


def isolating_traits(aggregates, required_traits: frozenset[str]) -> dict[int, frozenset[str]]:
    """For each (id, metadata) aggregate that keeps the request out: the traits it requires
    that the request does not."""
    isolating = {}
    for aggregate_id, metadata in aggregates:
        unmet = frozenset(key[len(TRAIT_KEY_PREFIX):] for key, value in metadata.items()
                          if key.startswith(TRAIT_KEY_PREFIX) and value == ISOLATING_VALUE
                          and key[len(TRAIT_KEY_PREFIX):] not in required_traits)
        if unmet:
            isolating[aggregate_id] = unmet
    return isolating


@dataclass(frozen=True, eq=False)
class IsolatedAggregates:
    unmet_traits: dict[int, frozenset[str]]  # isolating aggregate id -> traits the request lacks
    mask: np.ndarray  # uint64 words over columns' aggregate bits


class IsolateAggregates(Rule):
    name = "isolate_aggregates"

    def compile(self, request, columns, profile) -> list[Active]:
        if not profile.enable_isolated_aggregate_filtering:
            return [Active(self, self.name, None)]
        required = all_required_traits(request)
        params = columns.memo(self.name, required, lambda: self._params(required, columns))
        return [Active(self, self.name, params if params.unmet_traits else None)]

    @staticmethod
    def _params(required, columns) -> IsolatedAggregates:
        unmet = isolating_traits(fleet_aggregates(columns), required)
        return IsolatedAggregates(unmet, aggregate_mask(columns, unmet))

    def kernel(self, active, columns):
        # Forbidden aggregates are forbidden traits' predicate over the aggregate bitset.
        return _fastfilters.ForbiddenTraitsKernel(columns.arrays["aggregates"], active.params.mask)

    def explain(self, active, columns, row, placed) -> Rejection:
        unmet = active.params.unmet_traits
        isolating = [f"{aggregate_id} ({listed(unmet[aggregate_id])})"
                     for aggregate_id in sorted(set(columns.aggregates_of(row)) & unmet.keys())]
        return Rejection(active.name, IN_ISOLATED_AGGREGATE,
                         f"the host is in aggregates whose required traits ({TRAIT_KEY_PREFIX}NAME="
                         f"{ISOLATING_VALUE}) the request does not require: {'; '.join(isolating)}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        if not profile.enable_isolated_aggregate_filtering:
            return True
        unmet = isolating_traits(((agg.id, agg.metadata) for agg in fleet.aggregates_of(host.name)),
                                 all_required_traits(request))
        return not unmet
