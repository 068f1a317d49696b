"""Nova's NumInstancesFilter: num_instances < max_instances_per_host (strict)."""
from placecheck_engine.rules.count_limit import CountLimitRule

TOO_MANY_INSTANCES = "TOO_MANY_INSTANCES"


class NumInstancesFilter(CountLimitRule):
    name = "NumInstancesFilter"
    column = "num_instances"
    limit_option = "max_instances_per_host"
    reason = TOO_MANY_INSTANCES
