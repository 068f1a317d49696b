"""OpenStack names in placecheck's terms, shared by the feeder and the callers that ask.

Placement names an aggregate by a UUID; placecheck's aggregates have an integer id. The feeder
(`placecheck sync openstack`) and a conductor that turns Placement's `member_of` into a
PlacementRequest must agree on the id without talking to each other, so it is derived from the
UUID alone.
"""
from __future__ import annotations

import hashlib
import uuid

# 52 bits: exact in every client language (JavaScript numbers hold 53), and among 10,000
# aggregates two share an id with probability about 1e-8 (the feeder refuses such a pair).
AGGREGATE_ID_BITS = 52


def aggregate_id(aggregate_uuid: str) -> int:
    """placecheck's aggregate id for a Placement (or Nova) aggregate UUID: 1 + the first 52 bits
    of SHA-256 over the UUID's 16 bytes (hashed, since a UUID's own leading bits are partly fixed
    version bits); any spelling of one UUID gives one id."""
    digest = hashlib.sha256(uuid.UUID(aggregate_uuid).bytes).digest()
    return 1 + (int.from_bytes(digest[:8], "big") >> (64 - AGGREGATE_ID_BITS))
