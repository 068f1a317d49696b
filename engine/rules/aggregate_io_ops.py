"""Nova's AggregateIoOpsFilter: num_io_ops < the smallest aggregate max_io_ops_per_host."""
from placecheck_engine.rules.aggregate_metadata import AggregateCountLimitRule
from placecheck_engine.rules.io_ops import TOO_MANY_IO_OPS


class AggregateIoOpsFilter(AggregateCountLimitRule):
    name = "AggregateIoOpsFilter"
    count_column = "num_io_ops"
    limit_option = "max_io_ops_per_host"
    reason = TOO_MANY_IO_OPS
