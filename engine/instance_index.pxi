# --- Instance lookups (engine/columns.py: Columns.instance_rows, rows_of_instances) -------
# A request's instance ids are looked up all at once: each id is parsed, hashed and probed
# in C, and each hit's row found by bisecting instance_offsets, so a lookup costs well under a
# microsecond per id instead of a few numpy calls. The probes must mirror how engine/columns.py
# builds the indexes: canonical uuids (lowercase, hyphenated) by their 16 raw bytes in
# instance_slots (hash: _uuid_hash), every other id by its UTF-8 bytes in instance_other_slots
# (hash: heap_hash).

from libc.stdlib cimport free, qsort, realloc

cdef enum:
    UUID_TEXT_LENGTH = 36


cdef inline int hex_digit(uint8_t character) noexcept nogil:
    if 48 <= character <= 57:  # 0-9
        return character - 48
    if 97 <= character <= 102:  # a-f: uppercase is not canonical
        return character - 87
    return -1


cdef inline bint parse_canonical_uuid(const uint8_t* text, Py_ssize_t length,
                                      uint8_t* raw) noexcept nogil:
    """Fill raw[16] with the uuid's bytes, or False when the text is not a canonical uuid."""
    cdef Py_ssize_t position = 0, byte_index = 0
    cdef int high, low
    if length != UUID_TEXT_LENGTH:
        return False
    while position < UUID_TEXT_LENGTH:
        if position == 8 or position == 13 or position == 18 or position == 23:
            if text[position] != 45:  # '-'
                return False
            position += 1
            continue
        high = hex_digit(text[position])
        low = hex_digit(text[position + 1])
        if high < 0 or low < 0:
            return False
        raw[byte_index] = <uint8_t>(high << 4 | low)
        byte_index += 1
        position += 2
    return True


cdef inline uint64_t uuid_hash(const uint8_t* raw) noexcept nogil:
    """engine/columns.py _uuid_hash, for one uuid: over its bytes as two little-endian words."""
    cdef uint64_t first = 0, second = 0, mixed
    cdef int shift
    for shift in range(8):
        first |= (<uint64_t>raw[shift]) << (8 * shift)
        second |= (<uint64_t>raw[8 + shift]) << (8 * shift)
    mixed = first * 0x9E3779B97F4A7C15ULL ^ second * 0xC2B2AE3D27D4EB4FULL
    mixed ^= mixed >> 31
    mixed *= 0xFF51AFD7ED558CCDULL
    mixed ^= mixed >> 33
    return mixed


cdef inline int32_t row_of_entry(const int64_t* instance_offsets, Py_ssize_t rows,
                                int64_t entry) noexcept nogil:
    """The row r with instance_offsets[r] <= entry < instance_offsets[r + 1]."""
    cdef Py_ssize_t low = 0, high = rows, middle
    while high - low > 1:  # instance_offsets[low] <= entry < instance_offsets[high]
        middle = (low + high) // 2
        if instance_offsets[middle] <= entry:
            low = middle
        else:
            high = middle
    return <int32_t>low


cdef int compare_rows(const void* a, const void* b) noexcept nogil:
    cdef int32_t left = (<const int32_t*>a)[0], right = (<const int32_t*>b)[0]
    return (left > right) - (left < right)


cdef inline Py_ssize_t sort_distinct(int32_t* rows, Py_ssize_t count) noexcept nogil:
    """Sort rows[:count] and drop repeats in place; the number left."""
    cdef Py_ssize_t read, kept = 0
    if count > 1:
        qsort(rows, count, sizeof(int32_t), compare_rows)
    for read in range(count):
        if kept == 0 or rows[read] != rows[kept - 1]:
            rows[kept] = rows[read]
            kept += 1
    return kept


cdef struct FoundRows:  # a growable buffer, local to one lookup (threads share an InstanceIndex)
    int32_t* rows
    Py_ssize_t count, capacity


cdef int add_row(FoundRows* found, int32_t row) except -1:
    cdef int32_t* grown
    if found.count == found.capacity:
        found.capacity = max(16, 2 * found.capacity)
        grown = <int32_t*>realloc(found.rows, found.capacity * sizeof(int32_t))
        if grown == NULL:
            raise MemoryError()
        found.rows = grown
    found.rows[found.count] = row
    found.count += 1
    return 0


cdef inline const void* data_or_null(cnp.ndarray array):
    return cnp.PyArray_DATA(array) if array.size else NULL


cdef class InstanceIndex:
    """The instance arrays of one Columns (see engine/columns.py _instance_arrays), read through
    pointers taken once, so that a lookup converts no array."""
    cdef object arrays  # keeps the arrays the pointers point into alive
    cdef const int64_t* instance_offsets
    cdef Py_ssize_t host_count
    cdef const uint8_t* uuid_bytes  # [M, 16]
    cdef const int32_t* uuid_slots
    cdef uint64_t uuid_mask
    cdef const int32_t* other_entries
    cdef const int64_t* other_offsets
    cdef const uint8_t* other_bytes
    cdef const int32_t* other_slots
    cdef uint64_t other_mask

    def __init__(self, arrays):
        kept = {name: np.ascontiguousarray(arrays[name]) for name in (
            "instance_offsets", "instance_uuids", "instance_slots", "instance_other_entries",
            "instance_other_offsets", "instance_other_bytes", "instance_other_slots")}
        for name, dtype in (("instance_offsets", np.int64), ("instance_uuids", np.uint8),
                            ("instance_slots", np.int32), ("instance_other_entries", np.int32),
                            ("instance_other_offsets", np.int64), ("instance_other_bytes", np.uint8),
                            ("instance_other_slots", np.int32)):
            if kept[name].dtype != dtype:
                raise TypeError(f"{name} is {kept[name].dtype}, not {np.dtype(dtype)}")
        self.arrays = kept
        self.instance_offsets = <const int64_t*>data_or_null(kept["instance_offsets"])
        self.host_count = kept["instance_offsets"].size - 1
        self.uuid_bytes = <const uint8_t*>data_or_null(kept["instance_uuids"])
        self.uuid_slots = <const int32_t*>data_or_null(kept["instance_slots"])
        self.uuid_mask = kept["instance_slots"].size - 1
        self.other_entries = <const int32_t*>data_or_null(kept["instance_other_entries"])
        self.other_offsets = <const int64_t*>data_or_null(kept["instance_other_offsets"])
        self.other_bytes = <const uint8_t*>data_or_null(kept["instance_other_bytes"])
        self.other_slots = <const int32_t*>data_or_null(kept["instance_other_slots"])
        self.other_mask = kept["instance_other_slots"].size - 1

    def rows_per_instance(self, instances, bint distinct):
        """For each of `instances` (distinct str ids), the sorted rows of the hosts running it,
        concatenated; with `distinct`, the sorted distinct rows over all of them."""
        cdef const char* text
        cdef Py_ssize_t length, first
        cdef uint8_t raw[16]
        cdef FoundRows found
        found.rows = NULL
        found.count = found.capacity = 0
        try:
            for instance in instances:
                text = PyUnicode_AsUTF8AndSize(instance, &length)
                first = found.count
                if parse_canonical_uuid(<const uint8_t*>text, length, raw):
                    self.add_uuid_rows(&found, raw)
                else:
                    self.add_other_rows(&found, <const uint8_t*>text, length)
                if not distinct:  # a host counts once per instance id it runs
                    found.count = first + sort_distinct(found.rows + first, found.count - first)
            if distinct:
                found.count = sort_distinct(found.rows, found.count)
            rows = np.empty(found.count, dtype=np.int32)
            if found.count:
                memcpy(cnp.PyArray_DATA(rows), found.rows, found.count * sizeof(int32_t))
            return rows
        finally:
            free(found.rows)

    cdef int add_uuid_rows(self, FoundRows* found, const uint8_t* raw) except -1:
        cdef uint64_t slot = uuid_hash(raw) & self.uuid_mask
        cdef int32_t entry
        while (entry := self.uuid_slots[slot]) != -1:
            if memcmp(self.uuid_bytes + 16 * <Py_ssize_t>entry, raw, 16) == 0:
                add_row(found, row_of_entry(self.instance_offsets, self.host_count, entry))
            slot = (slot + 1) & self.uuid_mask
        return 0

    cdef int add_other_rows(self, FoundRows* found, const uint8_t* key, Py_ssize_t length) except -1:
        cdef uint64_t slot = heap_hash(key, length) & self.other_mask
        cdef int32_t other
        cdef int64_t start
        while (other := self.other_slots[slot]) != -1:
            start = self.other_offsets[other]
            if (self.other_offsets[other + 1] - start == length
                    and (length == 0 or memcmp(self.other_bytes + start, key, length) == 0)):
                add_row(found, row_of_entry(self.instance_offsets, self.host_count,
                                            self.other_entries[other]))
            slot = (slot + 1) & self.other_mask
        return 0
