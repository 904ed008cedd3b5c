# The graph engine's C-level declarations: segments, walk records, the node arena, the Var handle, and the
# functions other compiled modules (_optim, _nn) call. Op codes live in the generated _ops.pxd.
from fastgrad._types cimport f64, i64, u8, u32, intp

cdef enum:
    SEG_SHIFT = 12                 # a segment holds 2**SEG_SHIFT nodes
    SEG_SIZE = 1 << SEG_SHIFT
    SEG_MASK = SEG_SIZE - 1

ctypedef struct Segment:
    i64 seq          # activation number: live segments in increasing seq are in creation order
    intp fill        # nodes used; a live segment that is not the tail is always full
    intp alive       # nodes of this segment not yet freed
    intp prev        # previous live segment (older), -1 at the head
    intp next        # next live segment (newer), or the next free slot while pooled
    intp narg        # entries used in arg
    intp carg        # capacity of arg
    i64* arg         # operand node indices of this segment's n-ary nodes (CSR side array)
    bint live        # in the live list (else pooled)

ctypedef struct Walk:
    # The private state of one graph walk (a backward pass, a reverse sweep, a collection). A walk that can
    # call back into Python (a custom op's rule), or that runs while another thread's walk is paused there,
    # never shares these arrays: each running walk holds its own Walk until it ends.
    u32* mark        # mark[i] == epoch: node i was reached by this walk
    f64* adj         # adj[i]: adjoint of node i in this walk's reverse sweep (valid where mark[i] == epoch)
    u32 epoch        # stamp of this walk (increases per use; marks are cleared once on wrap-around)
    bint busy        # held by a running walk

ctypedef struct Arena:
    intp nslot       # slots ever created
    intp cslot       # slot capacity; node arrays hold cslot * SEG_SIZE entries
    intp nlive       # live segments
    intp nfree       # pooled segments
    i64 nalive       # nodes not yet freed, over all segments
    intp tail        # the live segment new nodes go to, -1 before the first node
    intp free_head   # first pooled slot, -1 when none
    i64 next_seq     # seq of the next activated segment
    intp nwalk       # Walk records allocated (each sized to the node capacity)
    Walk* walk       # walk[k]: the k-th walk record, handed out by acquire_walk()
    Segment* seg     # seg[s]: the bookkeeping of slot s
    u8* op           # op[i]: op code of node i
    u32* refc        # refc[i]: Var handles on node i + references from its consumers
    i64* p0          # p0[i]: first parent, or first arg slot of an n-ary node
    i64* p1          # p1[i]: second parent (-1 if none), or the arity of an n-ary node
    f64* value       # value[i]: forward value
    f64* aux         # aux[i]: constant operand k of the *C ops (a work-list link once i is freed)
    f64* grad        # grad[i]: .grad (leaves accumulate; interior nodes: set by the last backward reaching them)

# aux[i] of a leaf: 0.0 for a leaf that accumulates gradients, FROZEN for one that does not
# (``requires_grad_(False)``)
cdef extern from *:
    """
    #define FASTGRAD_FROZEN 1.0
    """
    const f64 FROZEN "FASTGRAD_FROZEN"

cdef class Var:
    cdef i64 idx            # the node this handle holds a reference on; -1 until __init__ gives it one
    cdef object __weakref__

cdef Arena* arena() noexcept
cdef f64* value_ptr() noexcept
cdef f64* grad_ptr() noexcept
cdef bint live_leaf(i64 i) noexcept
cdef bint grad_enabled() noexcept nogil
cdef i64 new_node(u8 op, i64 a, i64 b, f64 k, f64 y) except -1
cdef i64 new_nary(u8 op, const i64* arg, intp n, intp arity, f64 y) except -1
cdef int unset(Var v) except -1


cdef inline i64 node_index(Var v) except -1:
    """The node of handle ``v``; RuntimeError for a handle that was never given one (inline: no call)."""
    if v.idx < 0:
        unset(v)
    return v.idx
cdef i64 operand(object o, list keep, str fname) except -1
