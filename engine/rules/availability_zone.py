"""AvailabilityZone, as Nova 34 decides it: its request filter map_az_to_placement_aggregate
(nova/scheduler/request_filter.py) and, before that, its API's check that the zone exists.

Nova 34 has no AvailabilityZoneFilter (removed in 2023.2). A requested zone becomes a Placement
member_of: the host must be in one of the aggregates whose `availability_zone` metadata equals
the zone, to the letter. When no aggregate carries the zone, nothing is added and every host
passes (a request for the default zone "nova", which no aggregate names, lands anywhere).

Before scheduling a boot, Nova's API refuses a zone that is not the zone of an enabled compute
service (nova/compute/api.py, nova/availability_zones.py): a host's zone is its aggregates'
`availability_zone` values joined with "," (one value in a real deployment: Nova's aggregate API
refuses a host in two zones; Nova joins a set, so its order is arbitrary: sorted here), or
"nova" when it has none. Moves keep the zone of their request spec, which Nova does not check
again, so only a boot is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.columns import AVAILABILITY_ZONE_KEY, FLAG_ENABLED
from placecheck_engine.model import DEFAULT_AVAILABILITY_ZONE, InvalidField, Operation
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.rules.member_of import aggregate_mask
from placecheck_engine.verdict import Rejection

NOT_IN_ZONE_AGGREGATE = "NOT_IN_ZONE_AGGREGATE"
# Nova's [DEFAULT] internal_service_availability_zone: the zone of its control services
# (scheduler, conductor), which are always running where Nova answers, so the API accepts it.
INTERNAL_SERVICE_AVAILABILITY_ZONE = "internal"


def host_zone(metadatas) -> str:
    """The zone Nova's API gives a compute service, from its host's aggregates' metadata."""
    zones = sorted({metadata[AVAILABILITY_ZONE_KEY] for metadata in metadatas if AVAILABILITY_ZONE_KEY in metadata})
    return ",".join(zones) or DEFAULT_AVAILABILITY_ZONE


def available_zones(columns) -> frozenset[str]:
    """The zones of the enabled hosts (once per generation: one host zone per distinct
    aggregate membership), and the control services' zone."""
    def compute(columns) -> frozenset[str]:
        enabled = (columns.arrays["flags"] & FLAG_ENABLED) != 0
        memberships = columns.aggregate_memberships()
        sets = np.unique(columns.arrays["aggregate_set_id"][enabled]).tolist()
        return frozenset({host_zone(memberships[set_id]) for set_id in sets} | {INTERNAL_SERVICE_AVAILABILITY_ZONE})
    return columns.derived("available_zones", compute)


def available_zones_of_fleet(fleet) -> frozenset[str]:
    """available_zones in plain Python over engine.model, for property tests."""
    return frozenset({host_zone([agg.metadata for agg in fleet.aggregates_of(host.name)])
                      for host in fleet.hosts if host.enabled} | {INTERNAL_SERVICE_AVAILABILITY_ZONE})


def zone_aggregate_indexes(metadatas, zone: str) -> list[int]:
    """Indexes of the aggregates whose availability_zone is the zone, to the letter."""
    return [index for index, metadata in enumerate(metadatas) if metadata.get(AVAILABILITY_ZONE_KEY) == zone]


@dataclass(frozen=True, eq=False)
class ZoneParams:
    zone: str
    aggregate_ids: tuple[int, ...]  # the aggregates that put a host in the zone
    set_masks: np.ndarray  # uint64 [1, aggregate words], as MemberOf's kernel takes them


class AvailabilityZone(Rule):
    name = "AvailabilityZone"

    def validate(self, request, columns, profile) -> None:
        zone = request.availability_zone
        if zone and request.operation is Operation.BOOT and zone not in available_zones(columns):
            raise InvalidField("request.availability_zone",
                               f"the requested availability zone {zone!r} is not available: no enabled host is in it")

    def compile(self, request, columns, profile) -> list[Active]:
        zone = request.availability_zone
        params = columns.memo(self.name, zone, lambda: self._params(zone, columns)) if zone else None
        return [Active(self, self.name, params)]

    @staticmethod
    def _params(zone: str, columns) -> ZoneParams | None:
        ids = [columns.dicts["aggregates"][bit]
               for bit in zone_aggregate_indexes(columns.dicts["aggregate_metadata"], zone)]
        if not ids:
            return None  # Nova adds no constraint for a zone no aggregate carries
        return ZoneParams(zone, tuple(ids), aggregate_mask(columns, ids)[np.newaxis, :])

    def kernel(self, active, columns):
        return _fastfilters.MemberOfKernel(columns.arrays["aggregates"], active.params.set_masks)

    def explain(self, active, columns, row, placed) -> Rejection:
        params: ZoneParams = active.params
        memberships = columns.aggregate_memberships()[int(columns.arrays["aggregate_set_id"][row])]
        return Rejection(active.name, NOT_IN_ZONE_AGGREGATE,
                         f"requested zone {params.zone} is aggregate(s) {', '.join(map(str, params.aggregate_ids))}; "
                         f"the host is in none of them (its zone: {host_zone(memberships)})")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        zone = request.availability_zone
        zone_ids = {fleet.aggregates[index].id
                    for index in zone_aggregate_indexes([agg.metadata for agg in fleet.aggregates], zone)}
        return not zone or not zone_ids or any(agg.id in zone_ids for agg in fleet.aggregates_of(host.name))
