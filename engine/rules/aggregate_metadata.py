"""Shared pieces of Nova's aggregate-metadata filters.

Their distinct value is a host's aggregate membership (`aggregate_set_id`): the metadata
dicts of the aggregates in one distinct membership. Compile decides each membership once
per request; the value-table kernels broadcast the verdicts (or limits) over hosts.
"""
from __future__ import annotations

from typing import ClassVar

from placecheck_engine.rules.host_rows import listed
from placecheck_engine.rules.value_table import ValueLimitRule, ValueTableRule
from placecheck_engine.verdict import Rejection

AGGREGATE_SET_COLUMN = "aggregate_set_id"
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1


def host_aggregate_metadata(fleet, host) -> list[dict[str, str]]:
    return [aggregate.metadata for aggregate in fleet.aggregates_of(host.name)]


def aggregate_values_from_key(metadatas, key: str) -> set[str]:
    """Nova's utils.aggregate_values_from_key: the raw values (not comma-split) of one key."""
    return {metadata[key] for metadata in metadatas if key in metadata}


def aggregate_limit(values: set[str]) -> int | None:
    """Nova's validate_num_values(values, cast_to=int, based_on=min); None where Nova falls back to
    the configured option: no value, or a value int() refuses (ValueError)."""
    try:
        limit = min(int(value) for value in values) if values else None
    except ValueError:
        return None
    # Python ints are unbounded; the kernel's limits are int64.
    return None if limit is None else max(INT64_MIN, min(INT64_MAX, limit))


class AggregateMetadataRule(ValueTableRule):
    """passes_value(metadatas, ...) decides one membership: the list of its aggregates' metadata."""

    id_column = AGGREGATE_SET_COLUMN

    def distinct_values(self, columns):
        return columns.aggregate_memberships()

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        if not self.engages(request, profile):
            return True
        return self.passes_value(host_aggregate_metadata(fleet, host), request, profile, None)


class AggregateCountLimitRule(ValueLimitRule):
    """Nova's AggregateIoOpsFilter / AggregateNumInstancesFilter: count + placed < limit, the limit
    being the smallest int() of the host's aggregates' `limit_option` metadata; the configured
    option when no aggregate sets it or a value is not an integer."""

    id_column = AGGREGATE_SET_COLUMN
    limit_option: ClassVar[str]  # the Profile field and the metadata key
    reason: ClassVar[str]

    def distinct_values(self, columns):
        return columns.aggregate_memberships()

    def limit_key(self, request, profile) -> int:
        return getattr(profile, self.limit_option)

    def limit_of_value(self, metadatas, request, profile) -> int:
        limit = aggregate_limit(aggregate_values_from_key(metadatas, self.limit_option))
        return getattr(profile, self.limit_option) if limit is None else limit

    def explain(self, active, columns, row, placed) -> Rejection:
        count = int(columns.arrays[self.count_column][row])
        limit = self.limit_of_row(active, columns, row)
        values = aggregate_values_from_key(
            columns.aggregate_metadata_of_set(int(columns.arrays[self.id_column][row])), self.limit_option)
        if not values:
            source = f"{self.limit_option} (no aggregate sets it)"
        elif aggregate_limit(values) is None:
            source = f"{self.limit_option}: the aggregates' values {listed(values)} are not all integers"
        else:
            source = f"the smallest of the aggregates' {self.limit_option} {listed(values)}"
        already = f" + {placed} placed here by this request" if placed else ""
        return Rejection(active.name, self.reason,
                         f"{self.count_column} {count}{already} is not below {limit}, {source}",
                         {"actual": count + placed, "limit": limit})

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        limit = self.limit_of_value(host_aggregate_metadata(fleet, host), request, profile)
        return getattr(host, self.count_column) + placed < limit
