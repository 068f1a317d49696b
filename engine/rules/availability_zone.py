"""AvailabilityZone, as Nova's (historic) AvailabilityZoneFilter decides it.

A host's zones are the comma-split, stripped `availability_zone` metadata values of its
aggregates (Nova's aggregate_metadata_get_by_host); a host in no such aggregate is in the
default zone "nova"."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import _fastfilters
from engine.columns import AVAILABILITY_ZONE_KEY
from engine.model import DEFAULT_AVAILABILITY_ZONE
from engine.rules.base import Active, Rule
from engine.rules.host_rows import listed
from engine.verdict import Rejection

WRONG_AVAILABILITY_ZONE = "WRONG_AVAILABILITY_ZONE"


def zones_of(metadata_list) -> set[str] | None:
    """Zones named by these aggregates' metadata; None when none of them has the key."""
    values = [m[AVAILABILITY_ZONE_KEY] for m in metadata_list if AVAILABILITY_ZONE_KEY in m]
    if not values:
        return None
    return {zone.strip() for value in values for zone in value.split(",")}


@dataclass(frozen=True, eq=False)
class ZoneParams:
    zone: str
    zone_mask: np.ndarray  # aggregates that put a host in the zone
    default_zone_requested: bool


class AvailabilityZone(Rule):
    name = "AvailabilityZone"

    def compile(self, request, columns, profile) -> list[Active]:
        zone = request.availability_zone
        if not zone:
            return [Active(self, self.name, None)]
        return [Active(self, self.name, columns.memo(self.name, zone, lambda: self._params(zone, columns)))]

    @staticmethod
    def _params(zone: str, columns) -> ZoneParams:
        mask = np.zeros(columns.arrays["aggregates"].shape[1], dtype=np.uint64)
        for bit, metadata in enumerate(columns.dicts["aggregate_metadata"]):
            if zone in (zones_of([metadata]) or ()):
                mask[bit // 64] |= np.uint64(1 << (bit % 64))
        return ZoneParams(zone, mask, zone == DEFAULT_AVAILABILITY_ZONE)

    def scan(self, active, columns, fail_bits, bit, start, stop, placed) -> int:
        params: ZoneParams | None = active.params
        if params is None:
            return 0
        return _fastfilters.scan_availability_zone(
            columns.arrays["flags"], columns.arrays["aggregates"], params.zone_mask,
            params.default_zone_requested, fail_bits, bit, start, stop)

    def explain(self, active, columns, row, placed) -> Rejection:
        metadata = columns.dicts["aggregate_metadata"]
        bits = [columns.aggregate_bit(agg_id) for agg_id in columns.aggregates_of(row)]
        zones = zones_of([metadata[bit] for bit in bits])
        where = (f"in zone(s) {listed(zones)}" if zones is not None
                 else f"in no zoned aggregate, so in the default zone {DEFAULT_AVAILABILITY_ZONE}")
        return Rejection(active.name, WRONG_AVAILABILITY_ZONE,
                         f"requested zone {active.params.zone}, the host is {where}")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        zone = request.availability_zone
        if not zone:
            return True
        zones = zones_of([agg.metadata for agg in fleet.aggregates_of(host.name)])
        return zone == DEFAULT_AVAILABILITY_ZONE if zones is None else zone in zones
