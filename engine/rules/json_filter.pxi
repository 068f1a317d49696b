# JsonFilter (engine/rules/json_filter.py): a query compiled once per request into postfix
# bytecode, run here for every row. Each instruction is (opcode, operand, argc):
#   CONST k      push constants[k]
#   LOAD k       push the row's value of variable k: a typed column (times a scale, plus
#                `placed` times this request's change to it) or, for string and dict
#                variables, a per-distinct-value table indexed by the row's id column
#   EQ .. AND n  pop n arguments, push Nova's result for them
# Values carry Nova's Python type as a tag. Strings are ranks in the request's sorted
# universe of strings ("" is rank 0), dicts are equality classes ({} is 0), so comparing
# them is comparing numbers. ABSENT is Nova's None: the operators drop it.

from libc.stdint cimport int8_t
from libc.stdlib cimport malloc, free

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil

cdef enum:
    JSON_ABSENT = 0
    JSON_NUMBER = 1
    JSON_STRING = 2
    JSON_LIST = 3  # `not`'s result: up to 64 booleans, element i in bit i
    JSON_DICT = 4

cdef enum:
    JSON_CONST = 0
    JSON_LOAD = 1
    JSON_EQ = 2
    JSON_LT = 3
    JSON_GT = 4
    JSON_LE = 5
    JSON_GE = 6
    JSON_IN = 7
    JSON_NOT = 8
    JSON_OR = 9
    JSON_AND = 10

cdef enum:
    JSON_LOAD_ZERO = 0  # no column: the variable is 0 on every row (plus placed changes)
    JSON_LOAD_F64 = 1
    JSON_LOAD_I64 = 2
    JSON_LOAD_I32 = 3
    JSON_LOAD_TABLE = 4  # int32 id column into table_tags / table_numbers

# The Python side (json_filter.py) encodes programs with these numbers.
JSON_TAGS = {"absent": JSON_ABSENT, "number": JSON_NUMBER, "string": JSON_STRING,
             "list": JSON_LIST, "dict": JSON_DICT}
JSON_OPCODES = {"const": JSON_CONST, "load": JSON_LOAD, "=": JSON_EQ, "<": JSON_LT,
                ">": JSON_GT, "<=": JSON_LE, ">=": JSON_GE, "in": JSON_IN, "not": JSON_NOT,
                "or": JSON_OR, "and": JSON_AND}
JSON_LOAD_KINDS = {"zero": JSON_LOAD_ZERO, "float64": JSON_LOAD_F64, "int64": JSON_LOAD_I64,
                   "int32": JSON_LOAD_I32, "table": JSON_LOAD_TABLE}
JSON_LIST_MAX = 64


cdef struct JsonValue:
    int tag
    int length  # JSON_LIST
    double number  # JSON_NUMBER value, JSON_STRING rank, JSON_DICT class
    uint64_t bits  # JSON_LIST


cdef struct JsonLoad:
    int kind
    const void* column
    double scale
    double per_placed
    Py_ssize_t table_offset


cdef inline bint json_truthy(const JsonValue* value) noexcept nogil:
    if value.tag == JSON_LIST:
        return value.length != 0
    return value.number != 0


cdef inline bint json_equal(const JsonValue* a, const JsonValue* b) noexcept nogil:
    if a.tag != b.tag:
        return False
    if a.tag == JSON_LIST:
        return a.length == b.length and a.bits == b.bits
    return a.number == b.number


cdef inline int json_order(const JsonValue* a, const JsonValue* b) noexcept nogil:
    # Python's ordering of two values of one ordered kind (the compiler refuses the rest);
    # lists of booleans compare element by element, then by length.
    cdef int shorter
    cdef uint64_t differ
    if a.tag == JSON_LIST:
        shorter = a.length if a.length < b.length else b.length
        differ = a.bits ^ b.bits
        if shorter < 64:
            differ &= ((<uint64_t>1) << shorter) - 1
        if differ:
            return 1 if (a.bits >> __builtin_ctzll(differ)) & 1 else -1
        return (a.length > b.length) - (a.length < b.length)
    return (a.number > b.number) - (a.number < b.number)


cdef inline bint json_holds(int op, const JsonValue* a, const JsonValue* b) noexcept nogil:
    cdef int order
    if op == JSON_EQ:
        return json_equal(a, b)
    order = json_order(a, b)
    if op == JSON_LT:
        return order < 0
    if op == JSON_GT:
        return order > 0
    if op == JSON_LE:
        return order <= 0
    return order >= 0


cdef inline void json_apply(int op, const JsonValue* args, Py_ssize_t argc,
                            JsonValue* out) noexcept nogil:
    # Nova's operator over the arguments that are not None.
    cdef Py_ssize_t i, first = -1, compared = 0
    cdef bint result
    out.length = 0
    out.bits = 0
    out.number = 0
    if op == JSON_NOT:
        out.tag = JSON_LIST
        for i in range(argc):
            if args[i].tag != JSON_ABSENT:
                out.bits |= (<uint64_t>(not json_truthy(&args[i]))) << out.length
                out.length += 1
        return
    out.tag = JSON_NUMBER
    if op == JSON_AND or op == JSON_OR:
        result = op == JSON_AND  # all([]) is True, any([]) is False
        for i in range(argc):
            if args[i].tag != JSON_ABSENT and json_truthy(&args[i]) != result:
                result = not result
                break
        out.number = result
        return
    # Comparisons: the first argument against every other; fewer than two is False.
    result = op != JSON_IN
    for i in range(argc):
        if args[i].tag == JSON_ABSENT:
            continue
        if first < 0:
            first = i
            continue
        compared += 1
        if op == JSON_IN:
            result = result or json_equal(&args[first], &args[i])
        else:
            result = result and json_holds(op, &args[first], &args[i])
    out.number = result and compared > 0


cdef inline void json_load(const JsonLoad* load, const int8_t* table_tags,
                           const double* table_numbers, Py_ssize_t row, double placed,
                           JsonValue* out) noexcept nogil:
    cdef double value = 0
    cdef Py_ssize_t entry
    out.length = 0
    out.bits = 0
    if load.kind == JSON_LOAD_TABLE:
        entry = load.table_offset + (<const int32_t*>load.column)[row]
        out.tag = table_tags[entry]
        out.number = table_numbers[entry]
        return
    if load.kind == JSON_LOAD_F64:
        value = (<const double*>load.column)[row]
    elif load.kind == JSON_LOAD_I64:
        value = <double>(<const int64_t*>load.column)[row]
    elif load.kind == JSON_LOAD_I32:
        value = <double>(<const int32_t*>load.column)[row]
    out.tag = JSON_NUMBER
    out.number = value * load.scale + placed * load.per_placed


cdef bint json_passes(const int64_t* code, Py_ssize_t instructions, const JsonValue* constants,
                      const JsonLoad* loads, const int8_t* table_tags,
                      const double* table_numbers, JsonValue* stack, Py_ssize_t row,
                      double placed) noexcept nogil:
    # code: (opcode, operand, argc) per instruction
    cdef Py_ssize_t pc, top = 0, base
    cdef const int64_t* instruction
    for pc in range(instructions):
        instruction = code + 3 * pc
        if instruction[0] == JSON_CONST:
            stack[top] = constants[instruction[1]]
            top += 1
        elif instruction[0] == JSON_LOAD:
            json_load(&loads[instruction[1]], table_tags, table_numbers, row, placed, &stack[top])
            top += 1
        else:
            base = top - instruction[2]
            json_apply(<int>instruction[0], &stack[base], instruction[2], &stack[top])
            stack[base] = stack[top]
            top = base + 1
    # Nova: a list result passes when any element is True.
    if stack[0].tag == JSON_LIST:
        return stack[0].bits != 0
    return json_truthy(&stack[0])


cdef const void* json_column_pointer(int kind, object column, Py_ssize_t stop) except? NULL:
    # The data of a C-contiguous column of the kind's dtype, at least `stop` rows long.
    cdef const double[::1] f64
    cdef const int64_t[::1] i64
    cdef const int32_t[::1] i32
    if kind == JSON_LOAD_ZERO:
        return NULL
    if kind == JSON_LOAD_F64:
        f64 = column
        if f64.shape[0] < stop:
            raise ValueError("a JsonFilter column is shorter than the scanned rows")
        return &f64[0] if f64.shape[0] else NULL
    if kind == JSON_LOAD_I64:
        i64 = column
        if i64.shape[0] < stop:
            raise ValueError("a JsonFilter column is shorter than the scanned rows")
        return &i64[0] if i64.shape[0] else NULL
    i32 = column
    if i32.shape[0] < stop:
        raise ValueError("a JsonFilter column is shorter than the scanned rows")
    return &i32[0] if i32.shape[0] else NULL


def scan_json_query(const int64_t[:, ::1] code, const int8_t[::1] constant_tags,
                    const double[::1] constant_numbers, const int8_t[::1] load_kinds,
                    tuple load_columns, const double[::1] load_scales,
                    const double[::1] load_per_placed, const int64_t[::1] load_table_offsets,
                    const int8_t[::1] table_tags, const double[::1] table_numbers,
                    Py_ssize_t stack_depth, uint64_t[::1] fail_bits, int bit,
                    Py_ssize_t start, Py_ssize_t stop, int64_t placed):
    """Refuse every row of [start, stop) on which the compiled query is false."""
    cdef uint64_t mask = (<uint64_t>1) << bit
    cdef uint64_t refused = 0, fails
    cdef Py_ssize_t row, index, loads_count = load_kinds.shape[0]
    cdef Py_ssize_t constants_count = constant_tags.shape[0]
    cdef double placed_count = <double>placed
    if stop <= start:
        return 0
    cdef JsonValue* constants = <JsonValue*>malloc((constants_count + 1) * sizeof(JsonValue))
    cdef JsonLoad* loads = <JsonLoad*>malloc((loads_count + 1) * sizeof(JsonLoad))
    # One spare slot: json_apply writes its result above the arguments before moving it down.
    cdef JsonValue* stack = <JsonValue*>malloc((stack_depth + 1) * sizeof(JsonValue))
    cdef const int8_t* tags = &table_tags[0] if table_tags.shape[0] else NULL
    cdef const double* numbers = &table_numbers[0] if table_numbers.shape[0] else NULL
    try:
        if constants == NULL or loads == NULL or stack == NULL:
            raise MemoryError()
        for index in range(constants_count):
            constants[index].tag = constant_tags[index]
            constants[index].number = constant_numbers[index]
            constants[index].length = 0
            constants[index].bits = 0
        for index in range(loads_count):
            loads[index].kind = load_kinds[index]
            loads[index].column = json_column_pointer(load_kinds[index], load_columns[index], stop)
            loads[index].scale = load_scales[index]
            loads[index].per_placed = load_per_placed[index]
            loads[index].table_offset = load_table_offsets[index]
        with nogil:
            for row in range(start, stop):
                fails = not json_passes(&code[0, 0], code.shape[0], constants, loads, tags,
                                        numbers, stack, row, placed_count)
                fail_bits[row] |= mask * fails
                refused += fails
    finally:
        free(constants)
        free(loads)
        free(stack)
    return refused
