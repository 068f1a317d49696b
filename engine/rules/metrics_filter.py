"""Nova's MetricsFilter: the host reports every metric named in [metrics] weight_setting.

Decided once per distinct set of metric names (columns.dicts["metric_sets"]).
"""
from __future__ import annotations

from placecheck_engine.rules.host_rows import listed
from placecheck_engine.rules.value_table import ValueTableRule
from placecheck_engine.verdict import Rejection

MISSING_METRICS = "MISSING_METRICS"


def parse_weight_setting(entries) -> list[tuple[str, float]]:
    """Nova's scheduler.utils.parse_options(weight_setting, sep="=", converter=float): "name=ratio"
    pairs; an entry without "=", with an empty name or a ratio float() refuses is ignored."""
    pairs = []
    for entry in entries:
        name, separator, ratio = entry.partition("=")
        try:
            value = float(ratio)
        except ValueError:
            continue
        if name and separator:
            pairs.append((name, value))
    return pairs


def required_metrics(profile) -> frozenset[str]:
    return frozenset(name for name, _ in parse_weight_setting(profile.metrics_weight_setting))


class MetricsFilter(ValueTableRule):
    name = "MetricsFilter"
    id_column = "metric_set_id"

    def distinct_values(self, columns):
        return columns.dicts["metric_sets"]

    def engages(self, request, profile) -> bool:
        return bool(required_metrics(profile))

    def verdict_key(self, request, profile) -> frozenset[str]:
        return required_metrics(profile)

    def passes_value(self, value, request, profile, columns) -> bool:
        return required_metrics(profile) <= set(value)

    def explain(self, active, columns, row, placed) -> Rejection:
        missing = required_metrics(active.params.profile) - set(self.value_of(columns, row))
        return Rejection(active.name, MISSING_METRICS,
                         f"the host does not report metrics {listed(missing)} "
                         f"named in weight_setting")

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        return required_metrics(profile) <= set(host.metrics)
