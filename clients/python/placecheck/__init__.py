"""placecheck's Python client: the decision API, the fleet-state API and their helpers."""
from placecheck.client import (
    DEFAULT_DEADLINE_S,
    DEFAULT_DECISION_TARGET,
    DEFAULT_REPLACE_DEADLINE_S,
    DEFAULT_STATE_TARGET,
    NO_RETRIES,
    ClientTls,
    Generation,
    PlacementClient,
    RetryPolicy,
    StateClient,
    bad_request_violations,
    service_config,
    wait_until_serving,
    worker_target,
)

__all__ = [
    "DEFAULT_DEADLINE_S",
    "DEFAULT_DECISION_TARGET",
    "DEFAULT_REPLACE_DEADLINE_S",
    "DEFAULT_STATE_TARGET",
    "NO_RETRIES",
    "ClientTls",
    "Generation",
    "PlacementClient",
    "RetryPolicy",
    "StateClient",
    "bad_request_violations",
    "service_config",
    "wait_until_serving",
    "worker_target",
]
