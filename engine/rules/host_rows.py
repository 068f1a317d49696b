"""Shared pieces for rules decided by a few specific hosts (affinity, same/different host,
move source): the request's hosts become a small sorted row array at compile time, and the
kernel (host_rows.pxi) either refuses every other row or only the listed rows."""
from __future__ import annotations

import numpy as np


def sorted_rows(rows) -> np.ndarray:
    """Sorted, unique, C-contiguous int32 rows, as the host_rows kernels expect."""
    return np.unique(np.asarray(rows, dtype=np.int32))


def rows_of_hosts(columns, host_names) -> np.ndarray:
    """Rows of the named hosts that are in the fleet."""
    rows = (columns.row_of(name) for name in set(host_names))
    return sorted_rows([row for row in rows if row is not None])


def listed(names) -> str:
    return ", ".join(sorted(names))
