"""Nova's extra-spec operators (nova/scheduler/filters/extra_specs_ops.py): match(value, req).

The first word of `req` may be an operator; only the word after it is its operand
(`<all-in>` takes every following word, `<or>` alternates). A requirement that does not
start with an operator is compared with `value` as a whole string. Numeric operators call
float() on both sides, so a non-numeric operand raises ValueError as it does in Nova.
"""
from __future__ import annotations

import operator

OR_OPERATOR = "<or>"
ALL_IN_OPERATOR = "<all-in>"


def _at_least(value, operand) -> bool:
    return float(value) >= float(operand)


OPERATORS = {
    "=": _at_least,  # Nova's "=" is >=, not equality
    "<in>": lambda value, operand: operand in value,
    ALL_IN_OPERATOR: lambda value, operands: all(operand in value for operand in operands),
    "==": lambda value, operand: float(value) == float(operand),
    "!=": lambda value, operand: float(value) != float(operand),
    ">=": _at_least,
    "<=": lambda value, operand: float(value) <= float(operand),
    "s==": operator.eq,
    "s!=": operator.ne,
    "s<": operator.lt,
    "s<=": operator.le,
    "s>": operator.gt,
    "s>=": operator.ge,
}


def requirement_problem(req: str) -> str | None:
    """Why Nova's match() would raise on this requirement for any host holding a value, or None:
    a lone `<or>` pops an alternative from an empty list."""
    if req.split() == [OR_OPERATOR]:
        return f"{OR_OPERATOR} needs an alternative after it, e.g. '{OR_OPERATOR} a <or> b'"
    return None


def match(value: str | None, req: str) -> bool:
    words = req.split()
    op = words[0] if words else None
    method = OPERATORS.get(op)
    if op != OR_OPERATOR and method is None:
        return value == req
    if value is None:
        return False
    operands = words[1:]
    if op == OR_OPERATOR:
        if not operands:
            raise IndexError("<or> without an alternative")  # Nova's pop from an empty list
        # "<or> a <or> b": the alternatives are every other word after the operator.
        return value in operands[::2]
    if not operands:
        return False
    return method(value, operands if op == ALL_IN_OPERATOR else operands[0])
