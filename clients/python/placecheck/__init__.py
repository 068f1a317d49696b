"""placecheck's Python client: the decision API, the fleet-state API and their helpers."""
from placecheck.client import (
    DEFAULT_DECISION_TARGET,
    DEFAULT_STATE_TARGET,
    ClientTls,
    Generation,
    PlacementClient,
    StateClient,
    bad_request_violations,
    wait_until_serving,
)

__all__ = [
    "DEFAULT_DECISION_TARGET",
    "DEFAULT_STATE_TARGET",
    "ClientTls",
    "Generation",
    "PlacementClient",
    "StateClient",
    "bad_request_violations",
    "wait_until_serving",
]
