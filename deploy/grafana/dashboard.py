"""The placecheck Grafana dashboard, generated with grafana-foundation-sdk.

    python deploy/grafana/dashboard.py > deploy/grafana/placecheck.json   (or `make dashboard`)

The JSON is checked in; tests/test_dashboard.py fails when it differs from what this makes, and
tests/test_prometheus.py runs every panel's query against a real Prometheus scraping the sidecar.
"""
from __future__ import annotations

import json
import sys

from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, QueryVariable, Row
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

UID = "placecheck"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job=~"$job"'
WINDOW = "$__rate_interval"
PLACEMENT = "placecheck.v1.PlacementCheck"
FLEET_STATE = "placecheck.v1.FleetState"


def rate(metric: str, selector: str = "", by: str = "", window: str = WINDOW) -> str:
    grouping = f" by ({by})" if by else ""
    labels = ", ".join(part for part in (JOB, selector) if part)
    return f"sum{grouping} (rate({metric}{{{labels}}}[{window}]))"


def quantile(q: float, histogram: str, selector: str = "", by: str = "rpc") -> str:
    return f"histogram_quantile({q}, {rate(histogram + '_bucket', selector, f'{by}, le')})"


def query(expr: str, legend: str = "") -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr)
    return target.legend_format(legend) if legend else target


def graph(title: str, description: str, unit: str, *targets: prometheus.Dataquery, width: int = 12):
    panel = timeseries.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit) \
        .height(8).span(width).min(0)
    for ref_id, target in zip("ABCDEFGH", targets):
        panel = panel.with_target(target.ref_id(ref_id))
    return panel


def single(title: str, description: str, unit: str, expr: str, width: int = 6):
    return stat.Panel().title(title).description(description).datasource(DATASOURCE).unit(unit) \
        .height(4).span(width).with_target(query(expr).ref_id("A"))


def dashboard() -> Dashboard:
    ratio_of_selects = (f'(sum (rate(placecheck_decisions_total{{{JOB}, rpc="SelectDestinations", '
                        f'outcome="no_fit"}}[{WINDOW}])) or vector(0)) / '
                        + rate("placecheck_decisions_total", 'rpc="SelectDestinations"'))
    return (
        Dashboard("placecheck").uid(UID).tags(["placecheck", "openstack", "nova"])
        .description("Placement decisions, refusals by rule, load and the fleet snapshot of placecheck sidecars.")
        .time("now-3h", "now").refresh("30s").timezone("browser")
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(QueryVariable("job").label("Job").datasource(DATASOURCE)
                       .query("label_values(placecheck_build_info, job)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                       .include_all(True).all_value(".+").multi(True))

        .with_row(Row("Decisions"))
        .with_panel(graph("Decisions by RPC and outcome", "Decision calls answered per second.", "reqps",
                          query(rate("placecheck_decisions_total", by="rpc, outcome"), "{{rpc}} {{outcome}}")))
        .with_panel(graph("Refusals by RPC and outcome",
                          "Calls that placed nothing: CheckDestination refused, SelectDestinations no_fit, and "
                          "calls refused with an error status (invalid_argument, not_found, ...).", "reqps",
                          query(rate("placecheck_decisions_total", 'outcome!~"allowed|placed"', "rpc, outcome"),
                                "{{rpc}} {{outcome}}")))
        .with_panel(graph("CheckDestination: hosts refused by rule",
                          "Hosts refused per second by each rule (a host refused by two rules counts for both).",
                          "short", query(rate("placecheck_check_refusals_total", by="rule"), "{{rule}}")))
        .with_panel(graph("SelectDestinations: no-fit rate",
                          "Share of SelectDestinations calls that found no host.", "percentunit",
                          query(ratio_of_selects, "no fit"), width=6))
        .with_panel(graph("SelectDestinations: top eliminating rules",
                          "The 5 rules eliminating most hosts per second across every scan.", "short",
                          query(f"topk(5, {rate('placecheck_select_eliminations_total', by='rule')})", "{{rule}}"),
                          width=6))
        .with_panel(graph("Latency by RPC", "Time to answer a decision call, p50 and p99.", "s",
                          query(quantile(0.5, "placecheck_request_duration_seconds"), "p50 {{rpc}}"),
                          query(quantile(0.99, "placecheck_request_duration_seconds"), "p99 {{rpc}}"),
                          width=24))

        .with_row(Row("gRPC"))
        .with_panel(graph("Shed load", "Decision calls refused RESOURCE_EXHAUSTED by the workers' concurrency "
                          "limit (--threads-per-worker x 128 in flight per worker).", "reqps",
                          query(rate("placecheck_grpc_server_handled_total",
                                     f'service="{PLACEMENT}", code="RESOURCE_EXHAUSTED"', "rpc"), "{{rpc}}")))
        .with_panel(graph("Status codes", "Completed calls per second by method and gRPC status code.", "reqps",
                          query(rate("placecheck_grpc_server_handled_total", by="rpc, code"), "{{rpc}} {{code}}")))
        .with_panel(graph("Calls per worker", "Calls each decision worker received: the kernel spreads "
                          "connections over the workers, not calls, so callers holding few connections can "
                          "load one worker while another idles.", "reqps",
                          query(rate("placecheck_worker_calls_total", by="worker"), "worker {{worker}}"),
                          width=24))

        .with_row(Row("Fleet snapshot"))
        .with_panel(single("Ready", "1 while health reports SERVING.", "none", f"min (placecheck_ready{{{JOB}}})"))
        .with_panel(single("Snapshot age", "Seconds since the last write the published snapshot includes.", "s",
                           f"max (placecheck_snapshot_age_seconds{{{JOB}}})"))
        .with_panel(single("Generation", "Generation of the published snapshot.", "none",
                           f"max (placecheck_snapshot_generation{{{JOB}}})"))
        .with_panel(single("Hosts", "Hosts in the published snapshot.", "none",
                           f"max (placecheck_snapshot_hosts{{{JOB}}})"))
        .with_panel(graph("Writes by RPC and code", "FleetState writes per second.", "reqps",
                          query(rate("placecheck_grpc_server_handled_total",
                                     f'service="{FLEET_STATE}", rpc!="GetStatus"', "rpc, code"),
                                "{{rpc}} {{code}}"), width=8))
        .with_panel(graph("Write latency", "FleetState writes: p99 from the call's start to its acknowledgement "
                          "(durable and published).", "s",
                          query(quantile(0.99, "placecheck_grpc_server_handling_seconds",
                                         f'service="{FLEET_STATE}", rpc!="GetStatus"'), "p99 {{rpc}}"), width=8))
        .with_panel(graph("Publish latency", "Time to publish a snapshot to the workers, by kind.", "s",
                          query(quantile(0.5, "placecheck_snapshot_publish_duration_seconds", by="kind"),
                                "p50 {{kind}}"),
                          query(quantile(0.99, "placecheck_snapshot_publish_duration_seconds", by="kind"),
                                "p99 {{kind}}"), width=8))

        .with_row(Row("Processes"))
        .with_panel(graph("Worker restarts", "Decision workers started again, by reason.", "short",
                          query(f"sum by (reason) (increase(placecheck_worker_restarts_total{{{JOB}}}[{WINDOW}]))",
                                "{{reason}}"), width=8))
        .with_panel(graph("Config reloads", "SIGHUP reloads by outcome, and whether the last one was accepted.",
                          "short",
                          query(f"sum by (outcome) (increase(placecheck_config_reloads_total{{{JOB}}}[{WINDOW}]))",
                                "{{outcome}}"),
                          query(f"min (placecheck_config_last_reload_successful{{{JOB}}})", "last accepted"),
                          width=8))
        .with_panel(table.Panel().title("Build").description("Running builds.").datasource(DATASOURCE)
                    .height(8).span(8)
                    .with_target(query(f"count by (version, python_version, grpcio_version) "
                                       f"(placecheck_build_info{{{JOB}}})").ref_id("A")))
    )


def dashboard_json() -> str:
    model = dashboard().build()
    for number, panel in enumerate(model.panels, 1):  # Grafana wants panel ids unique; the builder leaves 0
        panel.id_val = number
    return json.dumps(model, cls=JSONEncoder, sort_keys=True, indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(dashboard_json())
