"""Nova's JsonFilter: the `query` scheduler hint, a JSON expression over host variables.

Nova evaluates `["and", [">=", "$free_ram_mb", 1024], ["=", "$hypervisor_type", "QEMU"]]`
host by host in Python, with its quirks: a comparison tests its first argument against
every other one and is False with fewer than two; a `$variable` the host lacks (None) and
a null or empty-string argument are dropped; `not` returns a list, which passes when any
element is True; `and`/`or` take Python truthiness; an empty query passes every host.

Here the query is compiled once per request (`compile_query`, then `JsonProgram`) into
postfix bytecode that json_filter.pxi runs over the rows without the GIL. Numeric
variables load typed columns; string and dict variables load per-distinct-value tables
built at compile time: strings become ranks in the sorted universe of the request's
strings, dicts become equality classes, so every comparison in the kernel is numeric.

What Nova would answer with an exception is refused at compile (InvalidField on the
query): invalid JSON, an unknown operator (KeyError), a comparison Python 3 cannot order
(TypeError: a string with a number, anything with a dict), a path into a value that is
not a dict (AttributeError). A query that could raise only on some hosts is refused too,
so the answer never depends on which hosts a request happens to look at. HostState
attributes placecheck does not model are refused rather than silently read as None.
"""
from __future__ import annotations

import json
import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

import numpy as np

from placecheck_engine import _fastfilters
from placecheck_engine.model import Host, InvalidField
from placecheck_engine.rules.base import Active, Rule
from placecheck_engine.verdict import Rejection

QUERY_IS_FALSE = "QUERY_IS_FALSE"

QUERY_FIELD = "request.scheduler_hints.query"

TAGS = _fastfilters.JSON_TAGS
OPCODES = _fastfilters.JSON_OPCODES
LOAD_KINDS = _fastfilters.JSON_LOAD_KINDS
ORDERINGS = frozenset({"<", ">", "<=", ">="})
OPERATORS = frozenset(OPCODES) - {"const", "load"}
LARGEST_EXACT_INTEGER = 2 ** 53  # integers beyond it have no exact float64 for the kernel

# Variables read from a numeric column: (array, resource class of its row or None, scale,
# and which of Nova's consume_from_request changes applies per instance placed).
# Without the resource class's inventory, Nova's HostState keeps its default 0.
NUMERIC_VARIABLES = {
    "free_ram_mb": ("w_free_ram_mb", None, 1.0, "-MEMORY_MB"),
    "free_disk_mb": ("w_free_disk_mb", None, 1.0, "-DISK_MB"),
    "total_usable_ram_mb": ("rc_total", "MEMORY_MB", 1.0, None),
    "total_usable_disk_gb": ("rc_total", "DISK_GB", 1.0, None),
    "disk_mb_used": ("rc_used", "DISK_GB", 1024.0, None),
    "vcpus_total": ("rc_total", "VCPU", 1.0, None),
    "vcpus_used": ("rc_used", "VCPU", 1.0, "+VCPU"),
    "num_instances": ("num_instances", None, 1.0, "+1"),
    "num_io_ops": ("num_io_ops", None, 1.0, "+1"),
    "failed_builds": ("failed_builds", None, 1.0, None),
}
STRING_VARIABLES = ("host_ip", "hypervisor_type")  # None in Nova when the host has none
STATS = "stats"  # Nova's HostState.stats: a dict of strings, {} when the host reports none
# Nova HostState attributes (and methods) placecheck's Host does not carry.
UNMODELLED_ATTRIBUTES = frozenset({
    "host", "nodename", "uuid", "cell_uuid", "hypervisor_hostname", "cpu_info",
    "supported_instances", "limits", "metrics", "aggregates", "instances", "service",
    "pci_stats", "numa_topology", "ram_allocation_ratio", "cpu_allocation_ratio",
    "disk_allocation_ratio", "updated", "allocation_candidates", "update",
    "consume_from_request",
})


# --- the query as a checked tree -------------------------------------------------------

@dataclass(frozen=True)
class Constant:
    value: Any  # bool, int, float, str or dict, as json.loads gave it

    @property
    def kind(self) -> str:
        return "string" if isinstance(self.value, str) else \
            "dict" if isinstance(self.value, dict) else "number"

    may_be_absent = False


@dataclass(frozen=True)
class Variable:
    path: tuple[str, ...]
    kind: str
    may_be_absent: bool

    @property
    def text(self) -> str:
        return "$" + ".".join(self.path)


@dataclass(frozen=True)
class Operation:
    operator: str
    args: tuple

    @property
    def kind(self) -> str:
        return "list" if self.operator == "not" else "number"

    may_be_absent = False


# A query's cost grows with its length and depth (compiled once per request, recursively, then
# run per 256 rows); Nova's own queries nest a few levels.
MAX_QUERY_LENGTH = 65_536
MAX_QUERY_DEPTH = 100


def _nesting(value) -> int:
    """How deeply lists nest in a decoded query, without recursing."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, list):
            deepest = max(deepest, depth)
            pending.extend((element, depth + 1) for element in item)
    return deepest


def _refuse(description: str) -> InvalidField:
    return InvalidField(QUERY_FIELD, description)


def _finite_constant(name: str) -> float:
    # json.loads accepts NaN, whose comparisons have no exact kernel form; Infinity is fine.
    if name == "NaN":
        raise _refuse("NaN is not a number the query can compare")
    return float(name)


def compile_query(text: str) -> Operation | None:
    """The checked tree of a query hint; None when Nova passes every host (no query, or one
    that is empty or false, such as [] or {})."""
    if not text:
        return None
    if len(text) > MAX_QUERY_LENGTH:
        raise _refuse(f"{len(text)} characters; at most {MAX_QUERY_LENGTH}")
    try:
        query = json.loads(text, parse_constant=_finite_constant)
    except (ValueError, RecursionError) as error:
        if isinstance(error, InvalidField):
            raise
        raise _refuse(f"not JSON: {error}") from None
    if not query:
        return None
    if _nesting(query) > MAX_QUERY_DEPTH:
        raise _refuse(f"nested deeper than {MAX_QUERY_DEPTH} levels")
    if isinstance(query, str):
        query = list(query)  # Nova indexes the string: an operator character, then arguments
    if not isinstance(query, list):
        raise _refuse(f"a query is a JSON list such as [\"=\", \"$num_instances\", 0], "
                      f"not {type(query).__name__} (Nova raises)")
    return _operation(query)


def _operation(query: list) -> Operation:
    operator = query[0]
    if not isinstance(operator, str) or operator not in OPERATORS:
        raise _refuse(f"unknown operator {operator!r} (Nova raises KeyError); operators: "
                      f"{', '.join(sorted(OPERATORS))}")
    args = []
    for arg in query[1:]:
        if isinstance(arg, list):
            node = _operation(arg) if arg else Constant(True)  # Nova: an empty query is True
        elif isinstance(arg, str):
            node = _string_argument(arg)
        elif arg is None:
            node = None
        else:
            node = _constant(arg)
        if node is not None:  # Nova drops None
            args.append(node)
    if operator in ORDERINGS:
        _check_orderable(operator, args)
    if operator == "not" and len(args) > _fastfilters.JSON_LIST_MAX:
        raise _refuse(f"'not' takes at most {_fastfilters.JSON_LIST_MAX} arguments here")
    return Operation(operator, tuple(args))


def _constant(value) -> Constant:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST_EXACT_INTEGER:
        raise _refuse(f"integer {value} is beyond the exactly comparable range ±2**53")
    return Constant(value)


def _string_argument(text: str) -> Constant | Variable | None:
    """Nova's _parse_string: "" is None, "$a.b" a HostState lookup, anything else itself."""
    if not text:
        return None
    if not text.startswith("$"):
        return Constant(text)
    path = tuple(text[1:].split("."))
    name = path[0]
    into = f"{text}: Nova raises AttributeError reading a key of a value that is not a dict"
    if name in NUMERIC_VARIABLES or name in STRING_VARIABLES or name == "hypervisor_version":
        if len(path) > 1:
            raise _refuse(into)
        kind = "string" if name in STRING_VARIABLES else "number"
        return Variable(path, kind, may_be_absent=name not in NUMERIC_VARIABLES)
    if name == STATS:
        if len(path) > 2:
            raise _refuse(into)
        return Variable(path, "string", True) if len(path) == 2 else Variable(path, "dict", False)
    if name in UNMODELLED_ATTRIBUTES or name.startswith("_"):
        raise _refuse(f"{text}: placecheck does not model Nova's HostState.{name}")
    return None  # getattr(host_state, name, None): not an attribute, dropped


def _check_orderable(operator: str, args: list) -> None:
    # Every argument that can be the first one present (all before it may be None) is
    # ordered against every later one; Python 3 raises TypeError across kinds and on dicts.
    for index, first in enumerate(args):
        for other in args[index + 1:]:
            if first.kind != other.kind or first.kind == "dict":
                raise _refuse(f"{operator!r} would order {_describe(first)} against "
                              f"{_describe(other)}: Nova raises TypeError on Python 3")
        if not first.may_be_absent:
            break


def _describe(node) -> str:
    if isinstance(node, Variable):
        return f"{node.text} (a {node.kind})"
    if isinstance(node, Operation):
        return f"the result of {node.operator!r} (a {node.kind})"
    return f"{node.value!r} (a {node.kind})"


def _walk(node):
    yield node
    if isinstance(node, Operation):
        for arg in node.args:
            yield from _walk(arg)


# --- the program the kernel runs -------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Load:
    """One variable's source: a column, or a table over a dictionary-encoded id column."""

    variable: Variable
    kind: str  # a key of JSON_LOAD_KINDS
    column: np.ndarray | None = None  # the values, or the ids for a table
    scale: float = 1.0
    per_placed: float = 0.0
    entries: Any = None  # a table's Python value per id (None: Nova's None)
    tags: np.ndarray | None = None
    numbers: np.ndarray | None = None

    def value_at(self, row: int, placed: int):
        if self.kind == "table":
            return self.entries[int(self.column[row])]
        base = 0.0 if self.column is None else float(self.column[row]) * self.scale
        return base + placed * self.per_placed


@dataclass(frozen=True, eq=False)
class JsonProgram:
    query: str
    loads: tuple[Load, ...]
    kernel_arguments: tuple  # JsonQueryKernel's arguments but the row count


def _kernel_arguments(loads: tuple[Load, ...], code: list, constants: dict, stack_depth: int) -> tuple:
    tables = [load for load in loads if load.kind == "table"]
    sizes = [len(load.tags) if load.kind == "table" else 0 for load in loads]
    return (np.array(code, dtype=np.int64).reshape(-1, 3),
            np.array([tag for tag, _ in constants], dtype=np.int8),
            np.array([number for _, number in constants], dtype=np.float64),
            np.array([LOAD_KINDS[load.kind] for load in loads], dtype=np.int8),
            tuple(load.column for load in loads),
            np.array([load.scale for load in loads], dtype=np.float64),
            np.array([load.per_placed for load in loads], dtype=np.float64),
            (np.cumsum([0] + sizes)[:-1]).astype(np.int64),
            np.concatenate([load.tags for load in tables] + [np.zeros(0, dtype=np.int8)]),
            np.concatenate([load.numbers for load in tables] + [np.zeros(0)]),
            stack_depth)


def build_program(query: str, tree: Operation, columns, request) -> JsonProgram:
    nodes = list(_walk(tree))
    variables = list(dict.fromkeys(node for node in nodes if isinstance(node, Variable)))
    string_constants = {node.value for node in nodes
                        if isinstance(node, Constant) and node.kind == "string"}
    strings = _StringRanks(columns, variables, string_constants)
    dicts = _DictClasses()
    loads = tuple(_load(variable, columns, request, strings, dicts) for variable in variables)
    load_index = {load.variable: index for index, load in enumerate(loads)}

    code, constants = [], {}
    depth = 0
    max_depth = 0

    def emit(node) -> None:
        nonlocal depth, max_depth
        if isinstance(node, Operation):
            for arg in node.args:
                emit(arg)
            code.append((OPCODES[node.operator], 0, len(node.args)))
            depth -= len(node.args)
        elif isinstance(node, Variable):
            code.append((OPCODES["load"], load_index[node], 0))
        else:
            number = strings.rank(node.value) if node.kind == "string" else \
                dicts.class_of(node.value) if node.kind == "dict" else float(node.value)
            key = (TAGS[node.kind], number)
            code.append((OPCODES["const"], constants.setdefault(key, len(constants)), 0))
        depth += 1
        max_depth = max(max_depth, depth)

    emit(tree)
    return JsonProgram(query, loads, _kernel_arguments(loads, code, constants, max_depth))


class _StringRanks:
    """Ranks in the sorted union of every string the request can compare: the fleet's
    distinct host_ips (sorted already, possibly one per host: ranked with numpy, no Python
    loop over them), the distinct profile strings the query reads, its constants and ""
    (rank 0, so a string is truthy when its rank is not 0)."""

    def __init__(self, columns, variables, constants: set[str]):
        reads_ip = any(v.path == ("host_ip",) for v in variables)
        self.host_ips = columns.dicts["host_ips"] if reads_ip else []
        others = set(constants) | {""}
        for variable in variables:
            if variable.kind == "string" and variable.path != ("host_ip",):
                others.update(value for value in _profile_entries(columns, variable)
                              if value is not None)
        ips = self.host_ips
        positions = {text: bisect_left(ips, text) for text in others}
        inserted = sorted(text for text, at in positions.items()
                          if not (at < len(ips) and ips[at] == text))
        inserted_at = np.array([positions[text] for text in inserted], dtype=np.int64)
        indices = np.arange(len(ips), dtype=np.int64)
        # An inserted string sorts before host_ips[i] exactly when its position is <= i.
        self.host_ip_ranks = indices + np.searchsorted(inserted_at, indices, side="right")
        self._ranks = {text: int(positions[text]) + k for k, text in enumerate(inserted)}
        for text, at in positions.items():
            if text not in self._ranks:  # equal to host_ips[at]
                self._ranks[text] = int(self.host_ip_ranks[at])

    def rank(self, text: str) -> float:
        return float(self._ranks[text])


class _DictClasses:
    """Equality classes of dict values under Python's ==; {} is class 0 (falsy)."""

    def __init__(self):
        self._hashable: dict = {frozenset(): 0}
        self._others: list[dict] = []
        self._count = 1

    def class_of(self, value: dict) -> float:
        try:
            key = frozenset(value.items())
        except TypeError:  # nested lists or dicts: few, compared one by one
            for index, other in enumerate(self._others):
                if other == value:
                    return float(-1 - index)
            self._others.append(value)
            return float(-len(self._others))
        return float(self._hashable.setdefault(key, len(self._hashable)))


def _request_change(change: str | None, request) -> float:
    """How one instance of this request changes a variable (Nova's consume_from_request)."""
    if change is None:
        return 0.0
    amounts = {"MEMORY_MB": request.resources.get("MEMORY_MB", 0),
               "DISK_MB": request.resources.get("DISK_GB", 0) * 1024,
               "VCPU": request.resources.get("VCPU", 0), "1": 1}
    sign = -1.0 if change[0] == "-" else 1.0
    return sign * amounts[change[1:]]


def _profile_entries(columns, variable: Variable) -> list:
    """The variable's value per host profile (Nova's None where the host has none)."""
    profiles = columns.dicts["host_profiles"]
    name = variable.path[0]
    if name == STATS:
        if len(variable.path) == 1:
            return [profile["stats"] for profile in profiles]
        return [profile["stats"].get(variable.path[1]) for profile in profiles]
    if name == "hypervisor_type":
        return [profile["hypervisor_type"] or None for profile in profiles]
    return [profile["hypervisor_version"] for profile in profiles]


def _load(variable: Variable, columns, request, strings: _StringRanks, dicts: _DictClasses) -> Load:
    name = variable.path[0]
    if name in NUMERIC_VARIABLES:
        array, resource_class, scale, change = NUMERIC_VARIABLES[name]
        per_placed = _request_change(change, request)
        column = columns.arrays[array]
        if resource_class is not None:
            index = columns.resource_class_index(resource_class)
            if index is None:
                return Load(variable, "zero", None, scale, per_placed)
            column = column[index]
        return Load(variable, str(column.dtype), column, scale, per_placed)
    if name == "host_ip":
        tags = np.full(len(strings.host_ips), TAGS["string"], dtype=np.int8)
        if strings.host_ips and strings.host_ips[0] == "":  # sorted: "" comes first
            tags[0] = TAGS["absent"]
        return Load(variable, "table", columns.arrays["host_ip_id"],
                    entries=_HostIps(strings.host_ips),
                    tags=tags, numbers=strings.host_ip_ranks.astype(np.float64))
    entries = _profile_entries(columns, variable)
    tags = np.array([TAGS["absent"] if value is None else TAGS[variable.kind] for value in entries],
                    dtype=np.int8)
    if variable.kind == "string":
        numbers = [strings.rank(value) if value is not None else 0.0 for value in entries]
    elif variable.kind == "dict":
        numbers = [dicts.class_of(value) for value in entries]
    else:
        numbers = [float(value) if value is not None else 0.0 for value in entries]
    return Load(variable, "table", columns.arrays["host_profile_id"], entries=entries, tags=tags,
                numbers=np.array(numbers, dtype=np.float64))


def _program(query: str, columns, request) -> JsonProgram | None:
    tree = compile_query(query)
    return None if tree is None else build_program(query, tree, columns, request)


class _HostIps:
    """host_ips as Nova's values, without copying them: "" is None."""

    def __init__(self, host_ips: list[str]):
        self._host_ips = host_ips

    def __getitem__(self, index: int):
        return self._host_ips[index] or None


# --- the rule --------------------------------------------------------------------------

class JsonFilter(Rule):
    name = "JsonFilter"

    def compile(self, request, columns, profile) -> list[Active]:
        query = request.scheduler_hints.query
        if not query:
            return [Active(self, self.name, None)]
        # A program reads the query, the columns and only the amounts of _request_change.
        amounts = tuple(request.resources.get(rc, 0) for rc in ("MEMORY_MB", "DISK_GB", "VCPU"))
        return [Active(self, self.name, columns.memo(self.name, (query, amounts),
                                                     lambda: _program(query, columns, request)))]

    def kernel(self, active, columns):
        program: JsonProgram = active.params
        return _fastfilters.JsonQueryKernel(*program.kernel_arguments, columns.host_count)

    def explain(self, active, columns, row, placed) -> Rejection:
        program: JsonProgram = active.params
        read = ", ".join(f"{load.variable.text} = {_shown(load.value_at(row, placed))}"
                         for load in program.loads)
        return Rejection(active.name, QUERY_IS_FALSE,
                         f"query {program.query} is false for this host"
                         + (f" ({read})" if read else ""))

    def reference(self, active_name, host, fleet, request, profile, placed) -> bool:
        return nova_host_passes(request.scheduler_hints.query, nova_host_state(host, request, placed))


def _shown(value) -> str:
    if value is None:
        return "None (dropped)"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


# --- the plain-Python reference: Nova's code path over engine.model --------------------

def nova_host_state(host: Host, request, placed: int) -> dict[str, Any]:
    """The HostState attributes a query can read, as Nova's HostManager fills them from the
    compute node, after `placed` instances of this request were consumed on the host."""
    def inventory(resource_class: str, field: str) -> int:
        found = host.resources.get(resource_class)
        return getattr(found, field) if found is not None else 0

    memory = request.resources.get("MEMORY_MB", 0)
    disk_gb = request.resources.get("DISK_GB", 0)
    vcpus = request.resources.get("VCPU", 0)
    return {
        "free_ram_mb": inventory("MEMORY_MB", "total") - inventory("MEMORY_MB", "used") - placed * memory,
        "total_usable_ram_mb": inventory("MEMORY_MB", "total"),
        "free_disk_mb": (inventory("DISK_GB", "total") - inventory("DISK_GB", "used")) * 1024
                        - placed * disk_gb * 1024,
        "total_usable_disk_gb": inventory("DISK_GB", "total"),
        "disk_mb_used": inventory("DISK_GB", "used") * 1024,
        "vcpus_total": inventory("VCPU", "total"),
        "vcpus_used": inventory("VCPU", "used") + placed * vcpus,
        "num_instances": host.num_instances + placed,
        "num_io_ops": host.num_io_ops + placed,
        "failed_builds": host.failed_builds,
        "host_ip": host.host_ip or None,
        "hypervisor_type": host.hypervisor_type or None,
        "hypervisor_version": host.hypervisor_version,
        "stats": dict(host.stats),
    }


def nova_host_passes(query: str, host_state: dict[str, Any]) -> bool:
    """Nova's JsonFilter.host_passes, step by step."""
    if not query:
        return True
    result = _process_filter(json.loads(query), host_state)
    if isinstance(result, list):
        result = any(result)
    return bool(result)


def _op_compare(args: list, op) -> bool:
    if len(args) < 2:
        return False
    if op is None:  # 'in'
        return args[0] in args[1:]
    return all(op(args[0], arg) for arg in args[1:])


_NOVA_COMMANDS = {
    "=": lambda args: _op_compare(args, lambda a, b: a == b),
    "<": lambda args: _op_compare(args, lambda a, b: a < b),
    ">": lambda args: _op_compare(args, lambda a, b: a > b),
    "in": lambda args: _op_compare(args, None),
    "<=": lambda args: _op_compare(args, lambda a, b: a <= b),
    ">=": lambda args: _op_compare(args, lambda a, b: a >= b),
    "not": lambda args: [not arg for arg in args],
    "or": any,
    "and": all,
}


def _parse_string(text: str, host_state: dict[str, Any]):
    if not text:
        return None
    if not text.startswith("$"):
        return text
    path = text[1:].split(".")
    value = host_state.get(path[0])
    if value is None:
        return None
    for item in path[1:]:
        value = value.get(item, None)
        if value is None:
            return None
    return value


def _process_filter(query, host_state: dict[str, Any]):
    if not query:
        return True
    method = _NOVA_COMMANDS[query[0]]
    cooked_args = []
    for arg in query[1:]:
        if isinstance(arg, list):
            arg = _process_filter(arg, host_state)
        elif isinstance(arg, str):
            arg = _parse_string(arg, host_state)
        if arg is not None:
            cooked_args.append(arg)
    return method(cooked_args)
