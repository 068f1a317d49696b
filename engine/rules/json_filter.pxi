# JsonFilter (engine/rules/json_filter.py): a query compiled once per request into postfix
# bytecode, run here over blocks of rows. Each instruction is (opcode, operand, argc):
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
from libc.string cimport memset

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


# Rows are evaluated a block at a time: each instruction runs over the whole block, so a
# load or a comparison is one tight loop over arrays instead of an interpreted step per row.
# A stack slot records the tag its rows share (or JSON_MIXED): numbers, strings and dicts
# compare and combine as plain numbers; other shapes (absent values, lists, `not`, more
# arguments) go row by row through json_apply, Nova's full semantics.

cdef enum:
    JSON_BLOCK_ROWS = 256
    JSON_MIXED = -1  # uniform_tag when the block's rows differ


cdef struct JsonBlock:
    int uniform_tag
    int8_t tags[JSON_BLOCK_ROWS]
    double numbers[JSON_BLOCK_ROWS]
    int lengths[JSON_BLOCK_ROWS]  # JSON_LIST rows only
    uint64_t bits[JSON_BLOCK_ROWS]  # JSON_LIST rows only


cdef inline bint json_scalar_tag(int tag) noexcept nogil:
    # Tags whose truth and order are their number's.
    return tag == JSON_NUMBER or tag == JSON_STRING or tag == JSON_DICT


cdef inline void json_set_uniform_tag(JsonBlock* block, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    cdef int8_t first = block.tags[0]
    cdef bint same = True
    for i in range(count):
        same &= block.tags[i] == first
    block.uniform_tag = first if same else JSON_MIXED


cdef inline void json_fill(JsonBlock* block, const JsonValue* value, Py_ssize_t count) noexcept nogil:
    cdef Py_ssize_t i
    memset(block.tags, value.tag, count)
    for i in range(count):
        block.numbers[i] = value.number
    if value.tag == JSON_LIST:
        for i in range(count):
            block.lengths[i] = value.length
            block.bits[i] = value.bits
    block.uniform_tag = value.tag


cdef inline void json_row(const JsonBlock* block, Py_ssize_t i, JsonValue* out) noexcept nogil:
    out.tag = block.tags[i]
    out.number = block.numbers[i]
    out.length = block.lengths[i] if out.tag == JSON_LIST else 0
    out.bits = block.bits[i] if out.tag == JSON_LIST else 0


cdef void json_load_block(const JsonLoad* load, const int8_t* table_tags,
                          const double* table_numbers, Py_ssize_t first, Py_ssize_t count,
                          double placed, JsonBlock* out) noexcept nogil:
    cdef Py_ssize_t i, entry
    cdef double shift = placed * load.per_placed, scale = load.scale
    cdef const int32_t* ids
    if load.kind == JSON_LOAD_TABLE:
        ids = <const int32_t*>load.column + first
        for i in range(count):
            entry = load.table_offset + ids[i]
            out.tags[i] = table_tags[entry]
            out.numbers[i] = table_numbers[entry]
            if out.tags[i] == JSON_LIST:
                out.lengths[i] = 0
                out.bits[i] = 0
        json_set_uniform_tag(out, count)
        return
    if load.kind == JSON_LOAD_F64:
        for i in range(count):
            out.numbers[i] = (<const double*>load.column)[first + i] * scale + shift
    elif load.kind == JSON_LOAD_I64:
        for i in range(count):
            out.numbers[i] = <double>(<const int64_t*>load.column)[first + i] * scale + shift
    elif load.kind == JSON_LOAD_I32:
        for i in range(count):
            out.numbers[i] = <double>(<const int32_t*>load.column)[first + i] * scale + shift
    else:
        for i in range(count):
            out.numbers[i] = 0.0 * scale + shift
    memset(out.tags, JSON_NUMBER, count)
    out.uniform_tag = JSON_NUMBER


cdef bint json_compare_block(int op, JsonBlock* a, const JsonBlock* b,
                             Py_ssize_t count) noexcept nogil:
    # Two arguments of one scalar tag: the result replaces `a`. The order tests are written
    # as json_order's sign tests, so NaN behaves as on the row-by-row path.
    cdef Py_ssize_t i
    if not (a.uniform_tag == b.uniform_tag and json_scalar_tag(a.uniform_tag)):
        return False
    if op == JSON_EQ or op == JSON_IN:
        for i in range(count):
            a.numbers[i] = a.numbers[i] == b.numbers[i]
    elif op == JSON_LT:
        for i in range(count):
            a.numbers[i] = a.numbers[i] < b.numbers[i]
    elif op == JSON_GT:
        for i in range(count):
            a.numbers[i] = a.numbers[i] > b.numbers[i]
    elif op == JSON_LE:
        for i in range(count):
            a.numbers[i] = not (a.numbers[i] > b.numbers[i])
    else:
        for i in range(count):
            a.numbers[i] = not (a.numbers[i] < b.numbers[i])
    if a.uniform_tag != JSON_NUMBER:
        memset(a.tags, JSON_NUMBER, count)
        a.uniform_tag = JSON_NUMBER
    return True


cdef bint json_combine_block(int op, JsonBlock* args, Py_ssize_t argc,
                             Py_ssize_t count) noexcept nogil:
    # `and` / `or` over arguments of scalar tags: the result replaces args[0].
    cdef Py_ssize_t i, k
    for k in range(argc):
        if not json_scalar_tag(args[k].uniform_tag):
            return False
    for i in range(count):
        args[0].numbers[i] = args[0].numbers[i] != 0
    for k in range(1, argc):
        if op == JSON_AND:
            for i in range(count):
                args[0].numbers[i] = (args[0].numbers[i] != 0) & (args[k].numbers[i] != 0)
        else:
            for i in range(count):
                args[0].numbers[i] = (args[0].numbers[i] != 0) | (args[k].numbers[i] != 0)
    if args[0].uniform_tag != JSON_NUMBER:
        memset(args[0].tags, JSON_NUMBER, count)
        args[0].uniform_tag = JSON_NUMBER
    return True


cdef void json_apply_rows(int op, JsonBlock* args, Py_ssize_t argc, JsonValue* scratch,
                          Py_ssize_t count) noexcept nogil:
    # Row by row, any operator and arguments; the result replaces args[0] (or fills it when
    # there are no arguments). scratch holds argc + 1 values.
    cdef Py_ssize_t i, k
    cdef JsonValue* result = scratch + argc
    for i in range(count):
        for k in range(argc):
            json_row(&args[k], i, &scratch[k])
        json_apply(op, scratch, argc, result)
        args[0].tags[i] = result.tag
        args[0].numbers[i] = result.number
        args[0].lengths[i] = result.length
        args[0].bits[i] = result.bits
    json_set_uniform_tag(&args[0], count)


cdef void json_run_block(const int64_t* code, Py_ssize_t instructions, const JsonValue* constants,
                         const JsonLoad* loads, const int8_t* table_tags,
                         const double* table_numbers, JsonBlock* stack, JsonValue* scratch,
                         Py_ssize_t first, Py_ssize_t count, double placed) noexcept nogil:
    # code: (opcode, operand, argc) per instruction; the query's value lands in stack[0].
    cdef Py_ssize_t pc, top = 0, base, argc
    cdef const int64_t* instruction
    cdef int op
    cdef bint handled
    for pc in range(instructions):
        instruction = code + 3 * pc
        op = <int>instruction[0]
        if op == JSON_CONST:
            json_fill(&stack[top], &constants[instruction[1]], count)
            top += 1
        elif op == JSON_LOAD:
            json_load_block(&loads[instruction[1]], table_tags, table_numbers, first, count,
                            placed, &stack[top])
            top += 1
        else:
            argc = instruction[2]
            base = top - argc
            if op == JSON_AND or op == JSON_OR:
                handled = argc > 0 and json_combine_block(op, &stack[base], argc, count)
            elif op == JSON_NOT:
                handled = False
            else:
                handled = argc == 2 and json_compare_block(op, &stack[base], &stack[base + 1], count)
            if not handled:
                json_apply_rows(op, &stack[base], argc, scratch, count)
            top = base + 1


cdef uint64_t json_refuse_block(const JsonBlock* result, uint64_t* fail_bits, uint64_t mask,
                                Py_ssize_t count) noexcept nogil:
    # Nova: a list result passes when any element is True; anything else by its truth.
    cdef Py_ssize_t i
    cdef uint64_t refused = 0, fails
    if json_scalar_tag(result.uniform_tag):
        for i in range(count):
            fails = result.numbers[i] == 0
            fail_bits[i] |= mask * fails
            refused += fails
        return refused
    for i in range(count):
        if result.tags[i] == JSON_LIST:
            fails = result.bits[i] == 0
        else:
            fails = result.numbers[i] == 0
        fail_bits[i] |= mask * fails
        refused += fails
    return refused


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


cdef class JsonQueryKernel(Kernel):
    """The compiled query (json_filter.py: JsonProgram.kernel_arguments) bound to its columns.
    Its constants and loads are read-only once made; each run takes its own stack, so threads
    may share the kernel."""
    cdef const int64_t[:, ::1] code
    cdef const int8_t[::1] table_tags
    cdef const double[::1] table_numbers
    cdef Py_ssize_t stack_depth
    cdef object columns  # the loads' arrays, which `loads` points into
    cdef JsonValue* constants
    cdef JsonLoad* loads

    def __init__(self, const int64_t[:, ::1] code, const int8_t[::1] constant_tags,
                 const double[::1] constant_numbers, const int8_t[::1] load_kinds,
                 tuple load_columns, const double[::1] load_scales,
                 const double[::1] load_per_placed, const int64_t[::1] load_table_offsets,
                 const int8_t[::1] table_tags, const double[::1] table_numbers,
                 Py_ssize_t stack_depth, Py_ssize_t rows):
        cdef Py_ssize_t index, loads_count = load_kinds.shape[0], constants_count = constant_tags.shape[0]
        self.code, self.table_tags, self.table_numbers = code, table_tags, table_numbers
        self.stack_depth, self.columns, self.rows = stack_depth, load_columns, rows
        self.constants = <JsonValue*>malloc((constants_count + 1) * sizeof(JsonValue))
        self.loads = <JsonLoad*>malloc((loads_count + 1) * sizeof(JsonLoad))
        if self.constants == NULL or self.loads == NULL:
            raise MemoryError()
        for index in range(constants_count):
            self.constants[index].tag = constant_tags[index]
            self.constants[index].number = constant_numbers[index]
            self.constants[index].length = 0
            self.constants[index].bits = 0
        for index in range(loads_count):
            self.loads[index].kind = load_kinds[index]
            self.loads[index].column = json_column_pointer(load_kinds[index], load_columns[index], rows)
            self.loads[index].scale = load_scales[index]
            self.loads[index].per_placed = load_per_placed[index]
            self.loads[index].table_offset = load_table_offsets[index]

    def __dealloc__(self):
        free(self.constants)
        free(self.loads)

    cdef uint64_t run(self, uint64_t* bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                      double placed) noexcept nogil:
        """OR `mask` into bits[row - start] for every refused row of [start, stop); how many.
        Without memory for its stack, every row is refused: none passes unchecked."""
        cdef uint64_t refused = 0
        cdef Py_ssize_t first = start, count, row
        cdef JsonBlock* stack = <JsonBlock*>malloc((self.stack_depth + 1) * sizeof(JsonBlock))
        # json_apply_rows's arguments and result; no operation takes more than the stack holds.
        cdef JsonValue* scratch = <JsonValue*>malloc((self.stack_depth + 2) * sizeof(JsonValue))
        cdef const int8_t* tags = &self.table_tags[0] if self.table_tags.shape[0] else NULL
        cdef const double* numbers = &self.table_numbers[0] if self.table_numbers.shape[0] else NULL
        if stack == NULL or scratch == NULL:
            for row in range(stop - start):
                bits[row] |= mask
            refused = stop - start
        else:
            while first < stop:
                count = min(<Py_ssize_t>JSON_BLOCK_ROWS, stop - first)
                json_run_block(&self.code[0, 0], self.code.shape[0], self.constants, self.loads, tags, numbers,
                               stack, scratch, first, count, placed)
                refused += json_refuse_block(&stack[0], bits + (first - start), mask, count)
                first += count
        free(stack)
        free(scratch)
        return refused

    cdef uint64_t scan_rows(self, uint64_t* fail_bits, uint64_t mask, Py_ssize_t start, Py_ssize_t stop,
                            int64_t placed) noexcept nogil:
        return self.run(fail_bits + start, mask, start, stop, <double>placed)

    cdef bint refuses(self, Py_ssize_t row, int64_t placed) noexcept nogil:
        cdef uint64_t bits = 0
        return self.run(&bits, 1, row, row + 1, <double>placed) != 0
