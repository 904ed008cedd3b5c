# C-level types shared by every fastgrad Cython module. Sizes and loop counters are intp.
from libc.stdint cimport int64_t, uint8_t, uint32_t

ctypedef double f64         # every scalar value, gradient and constant
ctypedef int64_t i64        # a global node index (-1: no node)
ctypedef uint8_t u8         # an op code
ctypedef uint32_t u32       # a backward-pass epoch stamp
ctypedef Py_ssize_t intp    # sizes, counts, loop counters
