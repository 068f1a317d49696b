"""Every rule, by name, in evaluation order: Placement's rules first (they run as its
allocation-candidates query before Nova's filters), then Nova's filters in the order of
its default enabled_filters, then the rest."""
from __future__ import annotations

from engine.rules.availability_zone import AvailabilityZone
from engine.rules.base import Rule
from engine.rules.compute_filter import ComputeFilter
from engine.rules.different_host import DifferentHostFilter
from engine.rules.forbidden_traits import ForbiddenTraits
from engine.rules.io_ops import IoOpsFilter
from engine.rules.member_of import MemberOf
from engine.rules.move_source import MoveSource
from engine.rules.num_instances import NumInstancesFilter
from engine.rules.required_traits import RequiredTraits
from engine.rules.resource import Resource
from engine.rules.same_host import SameHostFilter
from engine.rules.server_group_affinity import ServerGroupAffinityFilter
from engine.rules.server_group_anti_affinity import ServerGroupAntiAffinityFilter

RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Resource(),
    RequiredTraits(),
    ForbiddenTraits(),
    MemberOf(),
    AvailabilityZone(),
    MoveSource(),
    ComputeFilter(),
    ServerGroupAntiAffinityFilter(),
    ServerGroupAffinityFilter(),
    SameHostFilter(),
    DifferentHostFilter(),
    IoOpsFilter(),
    NumInstancesFilter(),
)}


def rule_names() -> list[str]:
    return list(RULES)
