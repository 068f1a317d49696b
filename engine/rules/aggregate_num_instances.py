"""Nova's AggregateNumInstancesFilter: num_instances < the smallest aggregate max_instances_per_host."""
from placecheck_engine.rules.aggregate_metadata import AggregateCountLimitRule
from placecheck_engine.rules.num_instances import TOO_MANY_INSTANCES


class AggregateNumInstancesFilter(AggregateCountLimitRule):
    name = "AggregateNumInstancesFilter"
    count_column = "num_instances"
    limit_option = "max_instances_per_host"
    reason = TOO_MANY_INSTANCES
