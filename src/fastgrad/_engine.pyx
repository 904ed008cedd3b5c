"""The graph engine: typed node arrays in recycled segments, the sweeps over them, and the Var handle.

The module is one compiled unit assembled from its seams (so the sweeps inline the op table):

- ``_ops.pxd`` (generated from fastgrad/_optable.py): op codes, forward values, first and second partials;
- ``_arena.pxi``: the node arrays, segments, walk records and lifetime (reference counts, freeing);
- ``_sweeps.pxi``: reverse sweeps (backward, grad), collection, tangent and adjoint sweeps;
- ``_handle.pxi``: operands and handles (what makes nodes from Python values);
- ``_var.pxi`` (generated from ``_var.pxi.in`` and the op table): the Var class and the ``fg.`` functions;
- ``_introspect.pxi``: tapes, local partials, parameter indices, memory statistics;
- ``_tape.pxi``: recording a traced graph for fg.compile, and the trace guard.

Nodes live in one arena of struct-of-arrays (op, parents, value, aux, grad, refc), cut into fixed-size
segments. A node's index is ``slot << SEG_SHIFT | offset``. Live segments form a list in activation order,
and a node is only ever created after its parents, so walking the live list backwards, each segment from its
last node down, is a reverse topological order: backward needs no recursion, no sort and no hash set.

Lifetime. Every node counts its references: the Var handles on it plus the consumers built on it. When a
count falls to zero the node is freed and its parents lose a reference, iteratively (the work list is
threaded through the freed nodes themselves, so freeing never allocates and never recurses). A segment
whose nodes are all freed goes back to a pool (the tail segment is reset in place). So a graph is freed as
soon as no handle reaches it, with no reference cycles for the GC, and a warm training loop reuses pooled
segments without allocating.

Walks and threads. The arena is interpreter-wide mutable state (node creation may ``realloc`` it), so every
sweep runs with the GIL held, even though the sweep loops themselves touch no Python object (they are
``nogil``). Every walk (backward, a private reverse sweep, a collection) holds a walk record of its own: its
visit marks and adjoints. A walk paused in a custom op's Python rule is therefore never disturbed by another
walk, nested in that rule or run by another thread (docs/engine.md, "Walks").
"""
cimport cython
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_Check
from cpython.long cimport PyLong_AsDouble, PyLong_Check
from libc.stdint cimport SIZE_MAX
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcpy, memset

cimport numpy as cnp

import numbers
import weakref

import numpy as np

cnp.import_array()

from fastgrad._ops cimport *
from fastgrad._types cimport f64, i64, u8, u32, intp

cdef Arena A
A.tail = -1
A.free_head = -1

cdef enum:
    MAX_WALKS = 64        # walks running at once (nested in custom rules, or paused in other threads)

# custom-op callbacks: node index -> backward callable; dropped when the node is freed
cdef dict _custom_fns = {}

# micrograd's per-node extras (fg.Value): node index -> label, and node index -> (children, op) given to the
# constructor; dropped when the node is freed. _n_meta counts the entries of both, so that freeing a node
# costs one integer test while no node has any.
cdef dict _labels = {}
cdef dict _given = {}
cdef intp _n_meta = 0

# Has any leaf ever been frozen (requires_grad_(False))? Until then backward skips the frozen test.
cdef bint _any_frozen = False

# Grad mode (fg.no_grad): a per-thread flag, and the number of threads that have it set. Node creation
# tests the plain counter first, so the thread-local read is paid only while some thread is in no_grad.
# The GIL serialises every change (set_grad_enabled runs with it held).
cdef extern from *:
    """
    static __thread int fastgrad_grad_off = 0;
    static int fastgrad_grad_off_threads = 0;
    """
    int fastgrad_grad_off
    int fastgrad_grad_off_threads


include "_arena.pxi"
include "_sweeps.pxi"
include "_handle.pxi"
include "_var.pxi"
include "_introspect.pxi"
include "_tape.pxi"
include "_tensors.pxi"
include "_tensor_ops.pxi"
