"""Nova's IoOpsFilter: num_io_ops < max_io_ops_per_host (strict)."""
from placecheck_engine.rules.count_limit import CountLimitRule

TOO_MANY_IO_OPS = "TOO_MANY_IO_OPS"


class IoOpsFilter(CountLimitRule):
    name = "IoOpsFilter"
    column = "num_io_ops"
    limit_option = "max_io_ops_per_host"
    reason = TOO_MANY_IO_OPS
