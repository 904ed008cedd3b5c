# The replay kernels, included by _replay.pyx (generic x86-64 / any CPU) and _replay_avx2.pyx (the same
# code compiled with -mavx2; fg.vmap uses it when the CPU has AVX2). Identical results: the
# same IEEE operations in the same order, only wider vectors.
cimport cython
from libc.stdlib cimport calloc, free, malloc

import numpy as np

from fastgrad._engine cimport FROZEN, Arena, Var, arena, node_index
from cython.parallel cimport prange, threadid
from libc.string cimport memset

from fastgrad._ops cimport (N_OPS, OP_ADD, OP_ADDC, OP_CUSTOM, OP_DOT, OP_LEAF, OP_MUL, OP_MULC, OP_NEG,
                            OP_RELU, OP_SUB, OP_SUM, OP_TANH, op_adjoint_block, op_grads, op_value,
                            op_value_block)
from libc.stdint cimport INT32_MAX, int32_t as i32

from fastgrad._types cimport f64, i64, u8, intp


# A dot node whose operand pairs step through the tape at fixed strides (w_m = w_0 + m * dw, x_m = x_0 + m
# * dx: a neuron's weights, the previous layer's outputs) is given this private op code in the single
# replay's own copy of the op array: its sweeps then step two indices instead of loading 2 per term. The
# terms are the same IEEE operations in the same order, so the same bits.
cdef enum:
    OP_DOT_STRIDED = N_OPS      # the first code after the op table's
    OP_DOT_GROUP                # a strided dot node that runs itself and 3 more (its group, below)
    OP_DOT_DONE                 # a strided dot node run by its group's first node: nothing to do itself
    OP_CHAIN_END                # the last link of a chain run (below): the reverse sweep runs it all there
    OP_DOT_SPAN                 # a dot group whose neurons' tails fill its span (below): forward runs it all
    OP_SPAN_TOP                 # the last node of such a span: the reverse sweep runs it all there
    DOT_GROUP = 4               # the nodes of a group


# Dot groups. The neurons of a layer are strided dot nodes over the same inputs, one after another on the
# tape (with the bias add and activation of each between them). Run one by one, each is a chain of
# dependent additions: the forward sweep waits on the adder's latency at every term. A group of 4 such
# nodes (at positions i, i + d, i + 2d, i + 3d) is run at its first position instead: 4 independent sums
# that share each input load, and in reverse, each input's adjoint updated 4 times in a register. Every
# value and every adjoint receives the same IEEE operations in the same order as node by node, because
# ``mark_groups`` forms a group only where
# - every operand of the group comes before i (the forward may compute them all at i);
# - the input positions are distinct (stride not 0), and the 4 weight ranges and the input range are
#   disjoint: each adjoint slot is then written by one term per node, in node order (reverse: 3, 2, 1, 0);
# - no other node between i and i + 3d reads a position of those ranges, so delaying the group's adjoint
#   terms to position i changes the order of nothing;
# - the last node is at most ``out``, where the reverse sweep starts.


# The single replay's sweeps keep the value (forward) and the adjoint (reverse) of position i - 1 in a
# register: in a chain of nodes, each reading the one before it, the next node then waits for one
# arithmetic result instead of a store and a reload. The arithmetic is the same IEEE operations in the
# same order as the eager sweep: the carried adjoint of i - 1 already holds every addition that the nodes
# after i made to it, since the reverse sweep reaches node i last among them.

cdef f64 strided_dot(const f64* v, const i32* pairs, intp cnt) noexcept nogil:
    """A strided dot node's value: sum over m of v[w0 + m dw] * v[x0 + m dx], in order (pairs: its first
    two operand pairs, which give w0, x0 and the strides)."""
    cdef intp m, pw = pairs[0], px = pairs[1], dw = pairs[2] - pairs[0], dx = pairs[3] - pairs[1]
    cdef f64 y = 0.0
    for m in range(cnt):
        y += v[pw] * v[px]
        pw += dw
        px += dx
    return y


cdef void strided_dot_adjoint(const f64* v, f64* g, const i32* pairs, intp cnt, f64 gi) noexcept nogil:
    """Add a strided dot node's adjoint products, term by term in order, as the general loop does."""
    cdef intp m, pw = pairs[0], px = pairs[1], dw = pairs[2] - pairs[0], dx = pairs[3] - pairs[1]
    for m in range(cnt):
        g[pw] += gi * v[px]
        g[px] += gi * v[pw]
        pw += dw
        px += dx


# The group kernels are C functions that GCC must not inline: inlined into the sweeps, their many live
# values made the compiler spill the chain's carried value in the sweeps' hot loop (+8 instructions per
# node of a plain chain, counted with callgrind).
cdef extern from *:
    """
    #include <stdint.h>
    #include <math.h>
    /* The group at i (nodes i + r d): the input position px and stride dx, shared, and each node's
       weight position w_r and stride d_r. */
    #define FASTGRAD_GROUP_OPERANDS \\
        const int32_t* p0 = args + a[i]; \\
        const int32_t* p1 = args + a[i + d]; \\
        const int32_t* p2 = args + a[i + 2 * d]; \\
        const int32_t* p3 = args + a[i + 3 * d]; \\
        Py_ssize_t px = p0[1], dx = p0[3] - p0[1]; \\
        Py_ssize_t w0 = p0[0], w1 = p1[0], w2 = p2[0], w3 = p3[0]; \\
        Py_ssize_t d0 = p0[2] - w0, d1 = p1[2] - w1, d2 = p2[2] - w2, d3 = p3[2] - w3;
    #define FASTGRAD_GROUP_STEP px += dx; w0 += d0; w1 += d1; w2 += d2; w3 += d3;
    /* The values of the dot group at i: stores those of i + d, i + 2d, i + 3d and returns node i's. */
    static __attribute__((noinline)) double fastgrad_group_dot(
            double* v, const int32_t* a, const int32_t* args, Py_ssize_t i, Py_ssize_t d, Py_ssize_t cnt) {
        FASTGRAD_GROUP_OPERANDS
        double y0 = 0.0, y1 = 0.0, y2 = 0.0, y3 = 0.0, x;
        if (d0 == 1 && d1 == 1 && d2 == 1 && d3 == 1) {    /* contiguous weights: one index for all four */
            for (Py_ssize_t m = 0; m < cnt; m++) {
                x = v[px];
                y0 += v[w0 + m] * x;
                y1 += v[w1 + m] * x;
                y2 += v[w2 + m] * x;
                y3 += v[w3 + m] * x;
                px += dx;
            }
            cnt = 0;
        }
        for (Py_ssize_t m = 0; m < cnt; m++) {
            x = v[px];
            y0 += v[w0] * x;
            y1 += v[w1] * x;
            y2 += v[w2] * x;
            y3 += v[w3] * x;
            FASTGRAD_GROUP_STEP
        }
        v[i + d] = y1;
        v[i + 2 * d] = y2;
        v[i + 3 * d] = y3;
        return y0;
    }
    /* Two input slots at once where every weight range is contiguous (a layer's neurons: d_r = 1), in
       2-lane vectors (SSE2 on x86-64, NEON on AArch64; GCC's and Clang's vector extension). Each lane gets
       the same IEEE operations in the same order as the scalar loop below (-ffp-contract=off: no fused
       multiply-adds), and the two slots of a pair touch distinct adjoints (dx != 0, disjoint ranges), so
       the bits are the same. */
    #if defined(__GNUC__) && (defined(__SSE2__) || defined(__ARM_NEON))
    #define FASTGRAD_GROUP_PAIRS 1
    typedef double fastgrad_v2 __attribute__((vector_size(16)));
    static inline fastgrad_v2 fastgrad_load2(const double* p) {
        fastgrad_v2 r;
        __builtin_memcpy(&r, p, sizeof r);
        return r;
    }
    static inline void fastgrad_store2(double* p, fastgrad_v2 r) { __builtin_memcpy(p, &r, sizeof r); }
    /* Input slot pair (x, gx); weight r at w: its adjoint gains g_r x, the pair's adjoint g_r w. */
    #define FASTGRAD_PAIR_TERM(w, gr) \
        fastgrad_store2(g + w + m, fastgrad_load2(g + w + m) + gr * x); \
        gx = gx + gr * fastgrad_load2(v + w + m);
    #else
    #define FASTGRAD_GROUP_PAIRS 0
    #endif
    /* Four input slots at once, in AVX2's 4-lane vectors, on an x86-64 CPU that has AVX2 (asked of the CPU
       at each call: the module itself is built for any x86-64). The same per-lane argument as the pairs'.
       Returns the slots done (a multiple of 4); the caller goes on from there. */
    #if FASTGRAD_GROUP_PAIRS && defined(__x86_64__)
    #define FASTGRAD_GROUP_QUADS 1
    typedef double fastgrad_v4 __attribute__((vector_size(32)));
    #define FASTGRAD_QUAD_TERM(w, gr) \
        { fastgrad_v4 t_; __builtin_memcpy(&t_, g + w + m, sizeof t_); t_ = t_ + gr * x; \
          __builtin_memcpy(g + w + m, &t_, sizeof t_); \
          __builtin_memcpy(&t_, v + w + m, sizeof t_); gx = gx + gr * t_; }
    static __attribute__((noinline, target("avx2"))) Py_ssize_t fastgrad_group_quads(
            const double* v, double* g, Py_ssize_t px, Py_ssize_t dx, Py_ssize_t cnt, Py_ssize_t w0,
            Py_ssize_t w1, Py_ssize_t w2, Py_ssize_t w3, double g0, double g1, double g2, double g3) {
        fastgrad_v4 vg0 = {g0, g0, g0, g0}, vg1 = {g1, g1, g1, g1}, vg2 = {g2, g2, g2, g2},
                    vg3 = {g3, g3, g3, g3};
        Py_ssize_t m = 0;
        for (; m + 3 < cnt; m += 4) {
            fastgrad_v4 x = {v[px], v[px + dx], v[px + 2 * dx], v[px + 3 * dx]};
            fastgrad_v4 gx = {g[px], g[px + dx], g[px + 2 * dx], g[px + 3 * dx]};
            FASTGRAD_QUAD_TERM(w3, vg3)
            FASTGRAD_QUAD_TERM(w2, vg2)
            FASTGRAD_QUAD_TERM(w1, vg1)
            FASTGRAD_QUAD_TERM(w0, vg0)
            g[px] = gx[0];
            g[px + dx] = gx[1];
            g[px + 2 * dx] = gx[2];
            g[px + 3 * dx] = gx[3];
            px += 4 * dx;
        }
        return m;
    }
    #else
    #define FASTGRAD_GROUP_QUADS 0
    #endif
    /* Add the dot group at i's adjoint terms (g0: node i's adjoint): per input slot, nodes 3, 2, 1, 0, as
       the reverse sweep would reach them one by one. */
    static __attribute__((noinline)) void fastgrad_group_dot_adjoint(
            const double* v, double* g, const int32_t* a, const int32_t* args, Py_ssize_t i, Py_ssize_t d,
            Py_ssize_t cnt, double g0) {
        FASTGRAD_GROUP_OPERANDS
        double g1 = g[i + d], g2 = g[i + 2 * d], g3 = g[i + 3 * d], x, gx;
        Py_ssize_t m = 0;
    #if FASTGRAD_GROUP_PAIRS
        if (d0 == 1 && d1 == 1 && d2 == 1 && d3 == 1) {
            fastgrad_v2 vg0 = {g0, g0}, vg1 = {g1, g1}, vg2 = {g2, g2}, vg3 = {g3, g3};
    #if FASTGRAD_GROUP_QUADS
            if (cnt >= 4 && __builtin_cpu_supports("avx2")) {
                m = fastgrad_group_quads(v, g, px, dx, cnt, w0, w1, w2, w3, g0, g1, g2, g3);
                px += m * dx;
            }
    #endif
            for (; m + 1 < cnt; m += 2) {
                fastgrad_v2 x = {v[px], v[px + dx]};
                fastgrad_v2 gx = {g[px], g[px + dx]};
                FASTGRAD_PAIR_TERM(w3, vg3)
                FASTGRAD_PAIR_TERM(w2, vg2)
                FASTGRAD_PAIR_TERM(w1, vg1)
                FASTGRAD_PAIR_TERM(w0, vg0)
                g[px] = gx[0];
                g[px + dx] = gx[1];
                px += 2 * dx;
            }
            w0 += m; w1 += m; w2 += m; w3 += m;
        }
    #endif
        for (; m < cnt; m++) {
            x = v[px];
            gx = g[px];
            g[w3] += g3 * x;
            gx += g3 * v[w3];
            g[w2] += g2 * x;
            gx += g2 * v[w2];
            g[w1] += g1 * x;
            gx += g1 * v[w1];
            g[w0] += g0 * x;
            gx += g0 * v[w0];
            g[px] = gx;
            FASTGRAD_GROUP_STEP
        }
    }
    /* Group spans (see "Group spans" below). The general tail runs the op table's own functions, op_value
       and op_grads (the module sets these pointers to them at import), as the sweeps do. */
    typedef double (*fastgrad_value_fn)(uint8_t, double, double, double);
    typedef void (*fastgrad_grads_fn)(uint8_t, double, double, double, double, double, double*, double*);
    static fastgrad_value_fn fastgrad_op_value;
    static fastgrad_grads_fn fastgrad_op_grads;
    /* The common spans, a layer's neurons with a bias add and then relu or tanh (the span's pattern), have
       loops of their own with those ops' formulas written out: the same operations as op_value's and
       op_grads' (the span tests compare every pattern with eager mode, bit for bit). */
    enum { FASTGRAD_SPAN_ANY, FASTGRAD_SPAN_ADD_RELU, FASTGRAD_SPAN_ADD_TANH };
    #define FASTGRAD_SPAN_FORWARD(act) \
        for (Py_ssize_t p = i; p < i + 4 * d; p += d) { \
            double y = v[p] + v[b[p + 1]]; \
            v[p + 1] = y; \
            v[p + 2] = act; \
        }
    #define FASTGRAD_SPAN_REVERSE(dact) \
        for (Py_ssize_t p = i + 3 * d; p >= i; p -= d) { \
            double x = v[p + 1], y = v[p + 2], gj = g[p + 2]; \
            g[p + 1] += gj * (dact); \
            gj = g[p + 1]; \
            g[p] += gj * 1.0; \
            g[b[p + 1]] += gj * 1.0; \
        }
    /* Forward of the span at i: the group's 4 dot values, then each neuron's tail (d - 1 nodes after it,
       op0: their op codes), as the forward sweep computes a node (an operand b < 0 reads as 0.0). */
    static __attribute__((noinline)) double fastgrad_span_forward(
            double* v, const uint8_t* op0, uint8_t pattern, const int32_t* a, const int32_t* b,
            const double* k, const int32_t* args, Py_ssize_t i, Py_ssize_t d, Py_ssize_t cnt) {
        double y0 = fastgrad_group_dot(v, a, args, i, d, cnt);
        v[i] = y0;
        if (pattern == FASTGRAD_SPAN_ADD_RELU) {
            FASTGRAD_SPAN_FORWARD((y > 0 || y != y) ? y : 0.0)
            return y0;
        }
        if (pattern == FASTGRAD_SPAN_ADD_TANH) {
            FASTGRAD_SPAN_FORWARD(tanh(y))
            return y0;
        }
        for (Py_ssize_t p = i; p < i + 4 * d; p += d) {
            double y = v[p];
            for (Py_ssize_t j = p + 1; j < p + d; j++) {
                Py_ssize_t bj = b[j];
                y = fastgrad_op_value(op0[j], y, bj >= 0 ? v[bj] : 0.0, k[j]);
                v[j] = y;
            }
        }
        return y0;
    }
    /* Reverse of the span at i, from its last node down, as the sweep would go node by node: each tail
       node's adjoint products added to its operands (a = j - 1, and b if it has one), then the group's dot
       adjoint terms at i. */
    static __attribute__((noinline)) void fastgrad_span_reverse(
            const double* v, double* g, const uint8_t* op0, uint8_t pattern, const int32_t* a,
            const int32_t* b, const double* k, const int32_t* args, Py_ssize_t i, Py_ssize_t d,
            Py_ssize_t cnt) {
        if (pattern == FASTGRAD_SPAN_ADD_RELU) {
            FASTGRAD_SPAN_REVERSE(x > 0 ? 1.0 : 0.0)
        } else if (pattern == FASTGRAD_SPAN_ADD_TANH) {
            FASTGRAD_SPAN_REVERSE(1.0 - y * y)
        } else {
            for (Py_ssize_t p = i + 3 * d; p >= i; p -= d)
                for (Py_ssize_t j = p + d - 1; j > p; j--) {
                    Py_ssize_t bj = b[j];
                    double c0, c1;
                    fastgrad_op_grads(op0[j], v[j - 1], bj >= 0 ? v[bj] : 0.0, k[j], v[j], g[j], &c0, &c1);
                    g[j - 1] += c0;
                    if (bj >= 0)
                        g[bj] += c1;
                }
        }
        fastgrad_group_dot_adjoint(v, g, a, args, i, d, cnt, g[i]);
    }
    """
    ctypedef f64 (*fastgrad_value_fn)(u8, f64, f64, f64) noexcept nogil
    ctypedef void (*fastgrad_grads_fn)(u8, f64, f64, f64, f64, f64, f64*, f64*) noexcept nogil
    fastgrad_value_fn fastgrad_op_value
    fastgrad_grads_fn fastgrad_op_grads
    enum:
        FASTGRAD_SPAN_ANY
        FASTGRAD_SPAN_ADD_RELU
        FASTGRAD_SPAN_ADD_TANH
    f64 span_forward "fastgrad_span_forward" (f64* v, const u8* op0, u8 pattern, const i32* a, const i32* b,
                                              const f64* k, const i32* args, intp i, intp d,
                                              intp cnt) noexcept nogil
    void span_reverse "fastgrad_span_reverse" (const f64* v, f64* g, const u8* op0, u8 pattern, const i32* a,
                                               const i32* b, const f64* k, const i32* args, intp i, intp d,
                                               intp cnt) noexcept nogil
    f64 group_dot "fastgrad_group_dot" (f64* v, const i32* a, const i32* args, intp i, intp d,
                                        intp cnt) noexcept nogil
    void group_dot_adjoint "fastgrad_group_dot_adjoint" (const f64* v, f64* g, const i32* a,
                                                         const i32* args, intp i, intp d, intp cnt,
                                                         f64 g0) noexcept nogil


fastgrad_op_value = op_value     # the span kernels' general tail: the op table's functions themselves
fastgrad_op_grads = op_grads


# Chain runs. A node whose one operand is the node just before it (a unary op, or one with a constant:
# x * 0.5, x + 1, tanh(x)), where that node is read by nothing else, is a link of a chain. A run of such
# links (positions i0 .. i1, marked by ``mark_chains``) is swept in reverse by a loop of its own that does
# nothing but the links' arithmetic: the adjoint of each link but the first is the single term its one
# reader adds (eager mode sets an adjoint at its first term, and -0.0 + c is c: the same bits), so it stays
# in a register and is never stored; only the first link's term is added to the adjoint of the node before
# the run. (The forward sweep runs the links as any node, which already keeps the previous value in a
# register: a loop of its own ran the bench's chain (10^5 nodes) forward slower, 4.4 against 3.4 ns per
# node, best of 10 interleaved runs.)

cdef f64 chain_reverse(const u8* op0, const f64* k, const f64* v, f64* g, intp i1, intp length,
                       f64 gi) noexcept nogil:
    """Backpropagate the run ending at i1 (gi: the adjoint of i1) down to its first link i0; adds that
    link's term to the adjoint of i0 - 1 and returns the sum."""
    cdef intp j
    cdef f64 c0, c1
    for j in range(i1, i1 - length, -1):
        op_grads(op0[j], v[j - 1], 0.0, k[j], v[j], gi, &c0, &c1)
        gi = c0
    j = i1 - length                 # i0 - 1
    gi = g[j] + gi
    g[j] = gi
    return gi


cdef inline bint table_op(u8 o) noexcept nogil:
    """Is o a unary, binary or constant-operand op of the table (codes 1 .. OP_SUM - 1), the common case,
    tested first by the sweeps with one comparison?"""
    return <u8>(o - 1) < <u8>(OP_SUM - 1)


cdef void sweep_forward(const u8* op, const u8* op0, const u8* pattern, const i32* a, const i32* b,
                        const f64* k, const i32* args, const i32* gap, intp start, intp n,
                        f64* v) noexcept nogil:
    cdef intp i, m, s, ai, bi
    cdef f64 y = v[start - 1] if start > 0 else 0.0     # v[i - 1] at the top of each step
    cdef f64 xa, xb
    cdef u8 o
    i = start
    while i < n:
        o = op[i]
        if table_op(o):
            ai = a[i]
            bi = b[i]
            if ai == i - 1:
                xa = y
            else:
                xa = v[ai]
            if bi < 0:
                xb = 0.0
            elif bi == i - 1:
                xb = y
            else:
                xb = v[bi]
            y = op_value(o, xa, xb, k[i])
        elif o >= OP_DOT_STRIDED:                 # the single replay's own codes
            if o == OP_DOT_SPAN:                  # the whole span: on to its last node (stored again)
                span_forward(v, op0, pattern[i], a, b, k, args, i, gap[i], b[i])
                i += DOT_GROUP * gap[i] - 1
                y = v[i]
            elif o == OP_DOT_GROUP:
                y = group_dot(v, a, args, i, gap[i], b[i])
            elif o == OP_DOT_STRIDED:
                y = strided_dot(v, args + a[i], b[i])
            elif o == OP_CHAIN_END:                # a chain run's last link: its op is op0's
                y = op_value(op0[i], y, 0.0, k[i])
            else:                                   # OP_DOT_DONE: computed by its group
                y = v[i]
        elif o == OP_SUM:
            s = a[i]
            y = 0.0
            for m in range(b[i]):
                y += v[args[s + m]]
        elif o == OP_DOT:
            s = a[i]
            y = 0.0
            for m in range(b[i]):
                y += v[args[s + 2 * m]] * v[args[s + 2 * m + 1]]
        else:                                       # OP_LEAF
            y = k[i]
        v[i] = y
        i += 1


cdef void sweep_reverse(const u8* op, const u8* op0, const u8* pattern, const i32* a, const i32* b,
                        const f64* k, const i32* args, const i32* gap, intp start, intp out, const f64* v,
                        f64* g) noexcept nogil:
    cdef intp i, m, s, x, w, ai, bi
    cdef f64 gi, c0, c1, carry
    cdef u8 o
    i = out
    gi = g[out] if out >= start else 0.0                 # g[i] at the top of each step
    while i >= start:
        o = op[i]
        if table_op(o):
            ai = a[i]
            bi = b[i]
            op_grads(o, v[ai], v[bi] if bi >= 0 else 0.0, k[i], v[i], gi, &c0, &c1)
            # g[ai] += c0, then g[bi] += c1 (when there is a b): position i - 1 in a register
            if ai == i - 1:
                carry = g[ai] + c0
                if bi == ai:
                    carry = carry + c1
                elif bi >= 0:
                    g[bi] += c1
                g[ai] = carry
                gi = carry
                i -= 1
                continue
            g[ai] += c0
            if bi == i - 1:
                carry = g[bi] + c1
                g[bi] = carry
                gi = carry
                i -= 1
                continue
            if bi >= 0:
                g[bi] += c1
        elif o >= OP_DOT_STRIDED:                 # the single replay's own codes
            if o == OP_SPAN_TOP:
                i -= gap[i]                         # the span's first node
                span_reverse(v, g, op0, pattern[i], a, b, k, args, i, gap[i], b[i])
            elif o == OP_DOT_GROUP:
                group_dot_adjoint(v, g, a, args, i, gap[i], b[i], gi)
            elif o == OP_DOT_STRIDED:
                strided_dot_adjoint(v, g, args + a[i], b[i], gi)
            elif o == OP_CHAIN_END:
                gi = chain_reverse(op0, k, v, g, i, gap[i], gi)
                i -= gap[i]
                continue
            # OP_DOT_DONE: its terms are added by its group
        elif o == OP_SUM:
            s = a[i]
            for m in range(b[i]):
                g[args[s + m]] += gi
        elif o == OP_DOT:
            s = a[i]
            for m in range(b[i]):
                w = args[s + 2 * m]
                x = args[s + 2 * m + 1]
                g[w] += gi * v[x]
                g[x] += gi * v[w]
        # OP_LEAF: nothing to propagate
        i -= 1
        if i >= start:
            gi = g[i]


cdef int check_tape(const u8[::1] op, const i64[::1] a, const i64[::1] b, const f64[::1] k,
                    const i64[::1] args, intp nin) except -1:
    """ValueError unless the arrays describe a tape the sweeps can run without reading out of bounds:
    inputs are leaves, every parent comes before its node, every operand slot exists."""
    cdef intp n = op.shape[0], i, m, slots
    if a.shape[0] != n or b.shape[0] != n or k.shape[0] != n:
        raise ValueError("Tape: op, a, b and k must have the same length")
    if not 0 <= nin <= n:
        raise ValueError(f"Tape: {nin} inputs for {n} positions")
    for i in range(n):
        if op[i] >= N_OPS or op[i] == OP_CUSTOM or (i < nin and op[i] != OP_LEAF):
            raise ValueError(f"Tape: position {i} has op code {op[i]}, which a tape cannot hold there")
        if i < nin or op[i] == OP_LEAF:
            continue
        if op[i] == OP_SUM or op[i] == OP_DOT:
            slots = b[i] * (2 if op[i] == OP_DOT else 1)
            if a[i] < 0 or b[i] < 0 or a[i] + slots > args.shape[0]:
                raise ValueError(f"Tape: position {i}: operand slots out of range")
            for m in range(slots):
                if not 0 <= args[a[i] + m] < i:
                    raise ValueError(f"Tape: position {i}: an operand does not come before it")
        elif not (0 <= a[i] < i and -1 <= b[i] < i):
            raise ValueError(f"Tape: position {i}: a parent does not come before it")
    return 0


cdef inline intp n_operands(const u8* op, const i32* b, intp p) noexcept:
    """How many operand slots node p of a checked tape reads (op: the tape's own codes)."""
    if op[p] == OP_DOT:
        return 2 * b[p]
    if op[p] == OP_SUM:
        return b[p]
    if op[p] == OP_LEAF:
        return 0
    return 1 if b[p] < 0 else 2


cdef inline intp operand(const u8* op, const i32* a, const i32* b, const i32* args, intp p, intp m) noexcept:
    """The position node p reads in its operand slot m (m < n_operands)."""
    if op[p] == OP_SUM or op[p] == OP_DOT:
        return args[a[p] + m]
    return a[p] if m == 0 else b[p]


cdef void mark_rows(const u8* op, const i32* a, const i32* b, const i32* args, intp nin, intp n, u8* row,
                    const i64[::1] outputs) noexcept:
    """Give a row to every external input that something other than a dot node reads (or that is an
    output)."""
    cdef intp i, m
    for i in range(nin, n):
        if op[i] != OP_DOT:
            for m in range(n_operands(op, b, i)):
                row[operand(op, a, b, args, i, m)] = 1
    for m in range(outputs.shape[0]):
        row[outputs[m]] = 1


cdef void mark_strided(const u8* op, const i32* a, const i32* b, const i32* args, intp nin, intp n,
                       u8* sop) noexcept:
    """sop = op, except OP_DOT_STRIDED for the dot nodes of at least 2 terms whose weight and input
    positions each form an arithmetic progression (any stride: 0, negative, overlapping ranges)."""
    cdef intp i, m, s, dw, dx
    cdef bint strided
    for i in range(n):
        sop[i] = op[i]
        if i < nin or op[i] != OP_DOT or b[i] < 2:
            continue
        s = a[i]
        dw = args[s + 2] - args[s]
        dx = args[s + 3] - args[s + 1]
        strided = True
        for m in range(2, b[i]):
            if args[s + 2 * m] - args[s + 2 * m - 2] != dw or args[s + 2 * m + 1] - args[s + 2 * m - 1] != dx:
                strided = False
                break
        if strided:
            sop[i] = OP_DOT_STRIDED


cdef inline void span(intp p0, intp d, intp cnt, intp* lo, intp* hi) noexcept:
    """The lowest and highest of the positions p0 + m d, m = 0 .. cnt - 1."""
    if d >= 0:
        lo[0], hi[0] = p0, p0 + (cnt - 1) * d
    else:
        lo[0], hi[0] = p0 + (cnt - 1) * d, p0


cdef bint group_fits(const u8* op, const i32* a, const i32* b, const i32* args, const u8* sop, intp i,
                     intp d) noexcept:
    """Can the strided dot nodes at i, i + d, i + 2d, i + 3d run as a group (the conditions above)?"""
    cdef intp lo[DOT_GROUP + 1]
    cdef intp hi[DOT_GROUP + 1]
    cdef intp cnt = b[i], r, s, p, m, q
    cdef const i32* pr
    cdef const i32* p0 = args + a[i]
    cdef intp dx = p0[3] - p0[1]
    if dx == 0:
        return False
    span(p0[1], dx, cnt, &lo[DOT_GROUP], &hi[DOT_GROUP])
    for r in range(DOT_GROUP):
        p = i + r * d
        pr = args + a[p]
        if sop[p] != OP_DOT_STRIDED or b[p] != cnt or pr[1] != p0[1] or pr[3] - pr[1] != dx:
            return False
        span(pr[0], pr[2] - pr[0], cnt, &lo[r], &hi[r])
    for r in range(DOT_GROUP + 1):
        if hi[r] >= i:
            return False
        for s in range(r):
            if not (hi[r] < lo[s] or hi[s] < lo[r]):
                return False
    for p in range(i + 1, i + (DOT_GROUP - 1) * d):
        if (p - i) % d == 0:
            continue
        for m in range(n_operands(op, b, p)):
            q = operand(op, a, b, args, p, m)
            for r in range(DOT_GROUP + 1):
                if lo[r] <= q <= hi[r]:
                    return False
    return True


cdef intp mark_groups(const u8* op, const i32* a, const i32* b, const i32* args, intp nin, intp out,
                      u8* sop, i32* gap) noexcept:
    """Mark the dot groups (see above) in sop: OP_DOT_GROUP at the first node, with gap[i] = d, and
    OP_DOT_DONE at the other 3. d is the distance to the next strided dot node (at most 8 positions on).
    Returns the number of groups."""
    cdef intp i = nin, j, d, groups = 0
    while i <= out:
        d = 0
        if sop[i] == OP_DOT_STRIDED:
            for j in range(i + 1, min(i + 9, out + 1)):
                if sop[j] == OP_DOT_STRIDED:
                    d = j - i
                    break
        if d == 0 or i + (DOT_GROUP - 1) * d > out or not group_fits(op, a, b, args, sop, i, d):
            i += 1
            continue
        sop[i] = OP_DOT_GROUP
        gap[i] = <i32>d
        for j in range(1, DOT_GROUP):
            sop[i + j * d] = OP_DOT_DONE
        groups += 1
        i += (DOT_GROUP - 1) * d + 1
    return groups


# Group spans. After a neuron's dot node come its bias add and activation: tail nodes, each reading the
# node just before it and, besides it, at most one position before the group (a bias). Where each of a dot
# group's 4 neurons is followed by d - 1 tail nodes (d: the group's stride), the group and its tails fill
# positions i .. e = i + 4d - 1, a span, which ``mark_spans`` marks (if e <= out, where the reverse sweep
# starts):
# - the forward sweep computes the whole span at i (the tails need nothing computed after i), then goes on
#   after e;
# - the reverse sweep runs the whole span at e: the tail nodes from the top down, as it would one by one (the
#   same additions in the same order), then the group's dot terms. No node outside the span reads inside it
#   before e: its nodes read only the group's operands, each other and positions before i.
# Tail ops: add, sub, mul, + k, * k, neg, relu, tanh. The usual tails, a bias add then relu or tanh for all
# 4 neurons, have loops of their own; on the moons tape, spans took the replay from 54 to 36 us (callgrind:
# 219 to 145 million instructions for 201 replays).

cdef inline bint tail(u8 o, intp aj, intp bj, intp j, intp i) noexcept:
    """Can node j (op o, operands aj, bj) be a tail node of the group at i: a tail op reading j - 1, and a
    position before i if binary (a hand-made tape may give a binary op no b, or a unary op a b: the general
    sweep handles those)?"""
    cdef bint binary = o == OP_ADD or o == OP_SUB or o == OP_MUL
    if not (binary or o == OP_ADDC or o == OP_MULC or o == OP_NEG or o == OP_RELU or o == OP_TANH):
        return False
    return aj == j - 1 and bj < i and (bj >= 0) == binary


cdef u8 span_pattern(const u8* op, intp i, intp d) noexcept:
    """The span at i's pattern for the span kernels: FASTGRAD_SPAN_ADD_RELU (or _TANH) where every neuron's
    tail is a bias add then relu (tanh), FASTGRAD_SPAN_ANY otherwise."""
    cdef intp r
    cdef u8 act = op[i + 2] if d == 3 else OP_LEAF
    if act != OP_RELU and act != OP_TANH:
        return FASTGRAD_SPAN_ANY
    for r in range(DOT_GROUP):
        if op[i + r * d + 1] != OP_ADD or op[i + r * d + 2] != act:
            return FASTGRAD_SPAN_ANY
    return FASTGRAD_SPAN_ADD_RELU if act == OP_RELU else FASTGRAD_SPAN_ADD_TANH


cdef intp mark_spans(const u8* op, const i32* a, const i32* b, intp out, intp n, u8* sop, i32* gap,
                     u8* pattern) noexcept:
    """Turn the dot groups whose tails fill their span into spans (above): OP_DOT_SPAN at i, with its
    pattern, OP_SPAN_TOP (gap: the span's length - 1) at its last node, OP_DOT_DONE between (so that no
    chain run takes them: mark_chains runs after). Returns the number of tail nodes."""
    cdef intp i, j, d, e, tails = 0
    cdef bint fits
    for i in range(n):
        pattern[i] = FASTGRAD_SPAN_ANY
    for i in range(n):
        if sop[i] != OP_DOT_GROUP:
            continue
        d = gap[i]
        e = i + DOT_GROUP * d - 1
        if e > out:
            continue
        fits = True
        for j in range(i + 1, e + 1):
            if (j - i) % d == 0:
                continue
            if sop[j] != op[j] or not tail(op[j], a[j], b[j], j, i):
                fits = False
                break
        if not fits:
            continue
        for j in range(i + 1, e + 1):
            sop[j] = OP_DOT_DONE                # the forward passes over them; the reverse jumps over them
        tails += DOT_GROUP * (d - 1)
        pattern[i] = span_pattern(op, i, d)
        sop[i] = OP_DOT_SPAN
        sop[e] = OP_SPAN_TOP
        gap[e] = <i32>(e - i)
    return tails


cdef intp mark_chains(const u8* op, const i32* a, const i32* b, const i32* args, intp nin, intp n,
                      intp out, u8* sop, i32* gap) except -1:
    """Mark the chain runs (see above) of at least 2 links in sop: OP_CHAIN_END at the last link, with gap =
    the run's length. A run never crosses ``out`` (the reverse sweep starts there) and takes no node that
    already has a code of the single replay's own. Returns the number of runs."""
    cdef intp i, m, i0, runs = 0
    cdef i32* uses = <i32*>calloc(max(n, 1), sizeof(i32))     # how many operand slots read each position
    if uses == NULL:
        raise MemoryError()
    for i in range(nin, n):
        for m in range(n_operands(op, b, i)):
            uses[operand(op, a, b, args, i, m)] += 1
    i = nin
    while i < n:
        if not link(op, a, b, sop, i):
            i += 1
            continue
        i0 = i
        while i + 1 < n and i != out and link(op, a, b, sop, i + 1) and uses[i] == 1:
            i += 1
        if i > i0:
            sop[i] = OP_CHAIN_END
            gap[i] = <i32>(i - i0 + 1)
            runs += 1
        i += 1
    free(uses)
    return runs


cdef inline bint link(const u8* op, const i32* a, const i32* b, const u8* sop, intp j) noexcept:
    """Can node j be a link of a chain run: one operand, the node before it, and no code of its own?"""
    return sop[j] == op[j] and op[j] != OP_LEAF and op[j] != OP_SUM and op[j] != OP_DOT and a[j] == j - 1 \
        and b[j] < 0


@cython.final
cdef class Tape:
    """A recorded graph, replayed on new argument values (see the module docstring)."""
    cdef readonly object op, a, b, k, operands   # NumPy arrays (kept: the pointers below point into them)
    cdef readonly list external                   # handles on the external nodes (kept alive)
    cdef readonly intp nargs, nin, n, out
    cdef readonly object outputs                  # positions of the outputs (out = outputs[0])
    cdef const u8* _op
    cdef u8* _sop            # the single replay's op codes: _op, with OP_DOT_STRIDED for strided dot nodes
                             # and OP_DOT_GROUP / OP_DOT_DONE for dot groups, OP_CHAIN_END for chain runs
    cdef i32* _gap           # _gap[i]: the distance between the nodes of the dot group at i, or the length of
                             # the chain run that ends at i
    cdef readonly intp dot_groups   # the groups of 4 dot nodes the single replay runs together
    cdef readonly intp chain_runs   # the chain runs it sweeps in loops of their own
    cdef readonly intp group_tails  # the tail nodes of the dot groups' spans (run with their groups)
    cdef u8* _pattern        # at a span's first node, the span's pattern (FASTGRAD_SPAN_*)
    cdef object _a32, _b32, _args32              # int32 copies of a, b, operands (half the index traffic)
    cdef const i32* _a
    cdef const i32* _b
    cdef const f64* _k
    cdef const i32* _args
    cdef f64* _scratch       # values and adjoints of run(), kept between calls (no page faults per call)
    cdef intp _cap
    cdef i64* _ext           # arena indices of the external nodes
    cdef bint* _ext_leaf     # is external node q a leaf (else: its adjoint is a backward seed)
    cdef bint _has_inner     # any external node that is not a leaf
    cdef u8* _row            # _row[p]: position p needs a per-sample row in a batched replay (an external
                             # input read only as a dot operand does not: it is a scalar there)

    def __cinit__(self, op, a, b, k, operands, list external, intp nargs, outputs):
        cdef const u8[::1] vop = op
        cdef const i64[::1] va = a, vb = b, vargs = operands
        cdef const f64[::1] vk = k
        cdef intp q, ne = len(external)
        cdef Arena* A = arena()
        self.op, self.a, self.b, self.k, self.operands = op, a, b, k, operands
        self.external = external
        self.nargs = nargs
        self.nin = nargs + ne
        self.n = vop.shape[0]
        self.outputs = np.asarray(outputs, dtype=np.int64)
        self.out = self.outputs[0]
        for q in range(self.outputs.shape[0]):
            if not 0 <= self.outputs[q] < self.n:
                raise ValueError("Tape: an output position is out of range")
        if self.n >= INT32_MAX or vargs.shape[0] >= INT32_MAX:
            raise ValueError("Tape: at most 2**31 - 1 positions and operand slots")
        check_tape(vop, va, vb, vk, vargs, self.nin)
        self._a32 = np.ascontiguousarray(a, dtype=np.int32)
        self._b32 = np.ascontiguousarray(b, dtype=np.int32)
        self._args32 = np.ascontiguousarray(operands, dtype=np.int32)
        cdef const i32[::1] va32 = self._a32, vb32 = self._b32, vargs32 = self._args32
        self._op = &vop[0] if self.n else NULL
        self._a = &va32[0] if self.n else NULL
        self._b = &vb32[0] if self.n else NULL
        self._k = &vk[0] if self.n else NULL
        self._args = &vargs32[0] if vargs.shape[0] else NULL
        self._ext = <i64*>malloc(max(ne, 1) * sizeof(i64))
        self._ext_leaf = <bint*>malloc(max(ne, 1) * sizeof(bint))
        if self._ext == NULL or self._ext_leaf == NULL:
            raise MemoryError()
        self._has_inner = False
        self._row = <u8*>malloc(max(self.n, 1))
        self._sop = <u8*>malloc(max(self.n, 1))
        self._gap = <i32*>malloc(max(self.n, 1) * sizeof(i32))
        self._pattern = <u8*>malloc(max(self.n, 1))
        if self._row == NULL or self._sop == NULL or self._gap == NULL or self._pattern == NULL:
            raise MemoryError()
        mark_strided(self._op, self._a, self._b, self._args, self.nin, self.n, self._sop)
        self.dot_groups = mark_groups(self._op, self._a, self._b, self._args, self.nin, self.out, self._sop,
                                      self._gap)
        self.group_tails = mark_spans(self._op, self._a, self._b, self.out, self.n, self._sop, self._gap,
                                      self._pattern)
        self.chain_runs = mark_chains(self._op, self._a, self._b, self._args, self.nin, self.n, self.out,
                                      self._sop, self._gap)
        for q in range(self.n):
            self._row[q] = not (nargs <= q < self.nin)
        mark_rows(self._op, self._a, self._b, self._args, self.nin, self.n, self._row, self.outputs)
        for q in range(ne):
            self._ext[q] = node_index(<Var>external[q])
            self._ext_leaf[q] = A.op[self._ext[q]] == OP_LEAF
            if not self._ext_leaf[q]:
                self._has_inner = True

    def __dealloc__(self):
        free(self._scratch)
        free(self._row)
        free(self._sop)
        free(self._pattern)
        free(self._gap)
        free(self._ext)
        free(self._ext_leaf)

    def run_batch(self, const f64[:, ::1] X not None, bint backward=True, f64 seed=1.0, intp block=128,
                  int threads=1, f64[:, ::1] values=None):
        """Replay over the rows of ``X`` (samples x arguments), node-major in blocks of ``block`` samples,
        on ``threads`` threads. Returns the per-sample values of output 0; ``values`` (optional, samples x
        outputs) receives every output. With ``backward``, every sample's output 0 is seeded with ``seed``
        and the external leaves' ``.grad`` gain the sum over samples (added in block order: the same bits
        for any number of threads); an external node that is not a leaf gets that sum as a backward seed."""
        cdef intp N = X.shape[0], nout = self.outputs.shape[0], ne = self.nin - self.nargs, q, blk
        if X.shape[1] != self.nargs:
            raise ValueError(f"the tape takes {self.nargs} argument values per sample, got {X.shape[1]}")
        if block < 1:
            raise ValueError(f"block must be at least 1, got {block}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if values is not None and (values.shape[0] != N or values.shape[1] != nout):
            raise ValueError(f"values: expected shape ({N}, {nout}), got ({values.shape[0]}, {values.shape[1]})")
        cdef intp nblk = (N + block - 1) // block
        losses = np.empty(N)
        outvals = np.empty((N, nout)) if values is None else values
        partial = np.zeros((max(nblk, 1), max(ne, 1)))
        ext_val = np.empty(max(ne, 1))
        cdef f64[::1] vl = losses, ve = ext_val
        cdef f64[:, ::1] vo = outvals, vp = partial
        cdef const i64[::1] vouts = self.outputs
        cdef Arena* A = arena()
        cdef f64 tot
        if N == 0:
            return losses
        for q in range(ne):
            ve[q] = A.value[self._ext[q]]
        run_blocks(self, &X[0, 0], N, &ve[0], min(block, N), threads, backward, seed, &vl[0], &vouts[0], nout,
                   &vo[0, 0], &vp[0, 0])
        if backward:
            for q in range(ne):
                tot = -0.0
                for blk in range(nblk):
                    tot = tot + vp[blk, q]
                if self._ext_leaf[q]:
                    if A.aux[self._ext[q]] != FROZEN:      # a frozen leaf takes no gradient
                        A.grad[self._ext[q]] += tot
                else:
                    self.external[q].backward(tot)
        return losses

    def run(self, const f64[::1] x not None, bint backward=True, f64 seed=1.0, f64[::1] values=None):
        """Replay on argument values ``x``: returns the output's value; with ``backward``, the external
        leaves' ``.grad`` gain d out / d leaf * seed, exactly as eager ``out.backward(seed)`` would.
        ``values`` (optional, one per output): receives the outputs' values."""
        if x.shape[0] != self.nargs:
            raise ValueError(f"the tape takes {self.nargs} argument values, got {x.shape[0]}")
        cdef intp n = self.n, nin = self.nin, nargs = self.nargs, q
        # NOTE: the scratch is the tape's own, reused by every call. That is safe: the GIL is held from here
        # until the sweeps are done, and what runs Python afterwards (an inner node's backward) reads
        # nothing from it, so a re-entrant or another thread's call can only come after.
        if self._cap < 2 * n:
            free(self._scratch)
            self._scratch = <f64*>malloc(max(2 * n, 1) * sizeof(f64))
            self._cap = 0 if self._scratch == NULL else 2 * n
            if self._scratch == NULL:
                raise MemoryError()
        cdef f64* v = self._scratch
        cdef f64* g = v + n
        cdef Arena* A = arena()
        cdef f64 y
        # NOTE: the GIL is held throughout: the external leaves' .grad is read before the sweep and
        # written after it, and no other thread may add to it in between.
        for q in range(nargs):
            v[q] = x[q]
        for q in range(nin - nargs):
            v[nargs + q] = A.value[self._ext[q]]
        sweep_forward(self._sop, self._op, self._pattern, self._a, self._b, self._k, self._args, self._gap, nin, n,
                      v)
        y = v[self.out]
        cdef const i64[::1] outs
        if values is not None:
            outs = self.outputs         # NOTE: typed (indexing the array made a NumPy scalar per output)
            if values.shape[0] != outs.shape[0]:
                raise ValueError(f"values: expected {outs.shape[0]} slots, got {values.shape[0]}")
            for q in range(outs.shape[0]):
                values[q] = v[outs[q]]
        if not backward:
            return y
        for q in range(n):
            g[q] = -0.0
        for q in range(nin - nargs):
            if self._ext_leaf[q]:
                g[nargs + q] = A.grad[self._ext[q]]
        g[self.out] += seed
        sweep_reverse(self._sop, self._op, self._pattern, self._a, self._b, self._k, self._args, self._gap, nin,
                      self.out, v, g)
        for q in range(nin - nargs):
            if self._ext_leaf[q] and A.aux[self._ext[q]] != FROZEN:    # a frozen leaf takes no gradient
                A.grad[self._ext[q]] = g[nargs + q]
        if self._has_inner:
            seeds = [(self.external[q], g[nargs + q]) for q in range(nin - nargs) if not self._ext_leaf[q]]
            for h, s in reversed(seeds):
                h.backward(s)
        return y


def sum_in_order(const f64[::1] x not None):
    """``0.0 + x[0] + x[1] + ...``, left to right: the bits of that Python loop over the floats, without
    making them (fg.vmap's total of the per-sample losses, in sample order)."""
    cdef f64 total = 0.0
    cdef intp s
    for s in range(x.shape[0]):
        total = total + x[s]
    return total


# ---------------------------------------------------------------------------------------------------------
# batched replay: one tape (one sample's graph) over many samples, node-major
# ---------------------------------------------------------------------------------------------------------
#
# A block of B samples is laid out node-major: V[i * B + s] is node i's value for sample s of the block, so
# each node's op runs as one loop over B contiguous values (op_value_block / op_adjoint_block). Blocks are
# independent: threads take whole blocks, each with its own V and G. The per-sample results (losses,
# auxiliary values) land in per-sample slots; each block's external-leaf gradient sums land in a row of
# their own, and the rows are added in block order at the end, so the result does not depend on how many
# threads ran or which ran what.

cdef inline bint scalar_ext(intp p, intp nargs, intp nin, const u8* row) noexcept nogil:
    """Is position ``p`` an external input that has no per-sample row (read as a scalar by dot nodes)?"""
    return nargs <= p < nin and not row[p]


cdef void block_forward(Tape t, f64* V, const f64* ev, intp B, intp cnt) noexcept nogil:
    """Forward over one block: V[i * B + s] is node i's value for sample s. An external input read only
    by dot nodes has no row: its value ``ev[p - nargs]`` is used as a scalar."""
    cdef const u8* op = t._op
    cdef const i32* a = t._a
    cdef const i32* b = t._b
    cdef const i32* args = t._args
    cdef const u8* row = t._row
    cdef intp i, m, s, st, pw, px, nargs = t.nargs, nin = t.nin
    cdef f64* y
    cdef const f64* w
    cdef const f64* x
    cdef f64 c
    for i in range(nin, t.n):
        y = V + i * B
        if op[i] == OP_SUM:
            st = a[i]
            for s in range(cnt):
                y[s] = 0.0
            for m in range(b[i]):
                x = V + args[st + m] * B
                for s in range(cnt):
                    y[s] += x[s]
        elif op[i] == OP_DOT:
            st = a[i]
            for s in range(cnt):
                y[s] = 0.0
            for m in range(b[i]):
                pw = args[st + 2 * m]
                px = args[st + 2 * m + 1]
                if scalar_ext(pw, nargs, nin, row):
                    c = ev[pw - nargs]
                    if scalar_ext(px, nargs, nin, row):
                        c = c * ev[px - nargs]
                        for s in range(cnt):
                            y[s] += c
                    else:
                        x = V + px * B
                        for s in range(cnt):
                            y[s] += c * x[s]
                elif scalar_ext(px, nargs, nin, row):
                    c = ev[px - nargs]
                    w = V + pw * B
                    for s in range(cnt):
                        y[s] += w[s] * c
                else:
                    w = V + pw * B
                    x = V + px * B
                    for s in range(cnt):
                        y[s] += w[s] * x[s]
        elif op[i] == OP_LEAF:
            for s in range(cnt):
                y[s] = t._k[i]
        else:
            op_value_block(op[i], V + a[i] * B, V + b[i] * B if b[i] >= 0 else NULL, t._k[i], y, cnt)


cdef inline f64 lane_dot(const f64* g, const f64* x, f64 c, intp cnt) noexcept nogil:
    """sum of g[s] * x[s] (or g[s] * c when ``x`` is NULL) in four interleaved lanes combined as
    (l0 + l1) + (l2 + l3), then the tail: a fixed order, the same bits on every run."""
    cdef f64 l0 = -0.0, l1 = -0.0, l2 = -0.0, l3 = -0.0
    cdef intp s = 0
    if x == NULL:
        while s + 4 <= cnt:
            l0 = l0 + g[s] * c
            l1 = l1 + g[s + 1] * c
            l2 = l2 + g[s + 2] * c
            l3 = l3 + g[s + 3] * c
            s += 4
        l0 = (l0 + l1) + (l2 + l3)
        while s < cnt:
            l0 = l0 + g[s] * c
            s += 1
        return l0
    while s + 4 <= cnt:
        l0 = l0 + g[s] * x[s]
        l1 = l1 + g[s + 1] * x[s + 1]
        l2 = l2 + g[s + 2] * x[s + 2]
        l3 = l3 + g[s + 3] * x[s + 3]
        s += 4
    l0 = (l0 + l1) + (l2 + l3)
    while s < cnt:
        l0 = l0 + g[s] * x[s]
        s += 1
    return l0


cdef inline f64 lane_sum(const f64* x, intp cnt) noexcept nogil:
    """x[0] + ... + x[cnt-1] in four interleaved lanes, in the fixed order of ``lane_dot``."""
    cdef f64 l0 = -0.0, l1 = -0.0, l2 = -0.0, l3 = -0.0
    cdef intp s = 0
    while s + 4 <= cnt:
        l0 = l0 + x[s]
        l1 = l1 + x[s + 1]
        l2 = l2 + x[s + 2]
        l3 = l3 + x[s + 3]
        s += 4
    l0 = (l0 + l1) + (l2 + l3)
    while s < cnt:
        l0 = l0 + x[s]
        s += 1
    return l0


cdef void block_reverse(Tape t, const f64* V, f64* G, const f64* ev, f64* P, intp B, intp cnt) noexcept nogil:
    """Reverse over one block. A row-less external input's adjoint is summed over the block straight into
    ``P[p - nargs]``; every other node's adjoint is a row of G."""
    cdef const u8* op = t._op
    cdef const i32* a = t._a
    cdef const i32* b = t._b
    cdef const i32* args = t._args
    cdef const u8* row = t._row
    cdef intp i, m, s, st, pw, px, nargs = t.nargs, nin = t.nin
    cdef const f64* g
    cdef const f64* w
    cdef const f64* x
    cdef f64* gw
    cdef f64* gx
    cdef f64 cw, cx
    i = t.out
    while i >= nin:
        g = G + i * B
        if op[i] == OP_SUM:
            st = a[i]
            for m in range(b[i]):
                gx = G + args[st + m] * B
                for s in range(cnt):
                    gx[s] += g[s]
        elif op[i] == OP_DOT:
            st = a[i]
            for m in range(b[i]):
                pw = args[st + 2 * m]
                px = args[st + 2 * m + 1]
                w = NULL if scalar_ext(pw, nargs, nin, row) else V + pw * B
                x = NULL if scalar_ext(px, nargs, nin, row) else V + px * B
                cw = ev[pw - nargs] if w == NULL else 0.0
                cx = ev[px - nargs] if x == NULL else 0.0
                # d/dw: g * x
                if w == NULL:
                    P[pw - nargs] = P[pw - nargs] + lane_dot(g, x, cx, cnt)
                else:
                    gw = G + pw * B
                    if x == NULL:
                        for s in range(cnt):
                            gw[s] += g[s] * cx
                    else:
                        for s in range(cnt):
                            gw[s] += g[s] * x[s]
                # d/dx: g * w
                if x == NULL:
                    P[px - nargs] = P[px - nargs] + lane_dot(g, w, cw, cnt)
                else:
                    gx = G + px * B
                    if w == NULL:
                        for s in range(cnt):
                            gx[s] += g[s] * cw
                    else:
                        for s in range(cnt):
                            gx[s] += g[s] * w[s]
        elif op[i] != OP_LEAF:
            op_adjoint_block(op[i], V + a[i] * B, V + b[i] * B if b[i] >= 0 else NULL, t._k[i], V + i * B, g,
                             G + a[i] * B, G + b[i] * B if b[i] >= 0 else NULL, cnt)
        i -= 1


cdef int run_blocks(Tape t, const f64* X, intp N, const f64* ev, intp B, int nthreads, bint backward,
                    f64 seed, f64* losses, const i64* outs, intp nout, f64* outvals, f64* partial) except -1:
    """Replay ``t`` over the N rows of ``X`` (N x nargs, row-major), in blocks of B samples.

    ``losses[s]``: output 0 of sample s; ``outvals[s * nout + q]``: output q; with ``backward``, row ``blk``
    of ``partial`` (nblocks x next) gets block blk's sums of the external inputs' adjoints (each sample
    seeded with ``seed``)."""
    cdef intp nblk = (N + B - 1) // B, blk, n = t.n, nin = t.nin, nargs = t.nargs, ne = t.nin - t.nargs
    cdef intp s, q, i, s0, cnt, stride = n * B * (2 if backward else 1) + ne
    cdef f64* V
    cdef f64* G
    cdef f64* P
    if nthreads > nblk:
        nthreads = <int>nblk
    # per thread: values, adjoints, and the block's sums for the row-less external inputs
    cdef f64* scratch = <f64*>malloc(nthreads * stride * sizeof(f64) + sizeof(f64))
    if scratch == NULL:
        raise MemoryError()
    try:
        # NOTE: threads take the next free block (dynamic), not fixed halves: on a shared machine one core
        # often runs slower than the other, and the fast thread then does more blocks. Which thread runs a
        # block changes nothing in the result (each block writes only its own rows).
        for blk in prange(nblk, nogil=True, num_threads=nthreads, schedule="dynamic"):
            V = scratch + threadid() * stride
            G = V + n * B
            P = G + (n * B if backward else 0)
            s0 = blk * B
            cnt = min(B, N - s0)
            for q in range(nargs):
                for s in range(cnt):
                    V[q * B + s] = X[(s0 + s) * nargs + q]
            for q in range(ne):
                if t._row[nargs + q]:
                    for s in range(cnt):
                        V[(nargs + q) * B + s] = ev[q]
            block_forward(t, V, ev, B, cnt)
            for s in range(cnt):
                losses[s0 + s] = V[t.out * B + s]
                for q in range(nout):
                    outvals[(s0 + s) * nout + q] = V[outs[q] * B + s]
            if backward:
                for i in range(n):
                    if i < nargs or i >= nin or t._row[i]:
                        for s in range(cnt):
                            G[i * B + s] = -0.0
                for q in range(ne):
                    P[q] = -0.0
                for s in range(cnt):
                    G[t.out * B + s] = seed
                block_reverse(t, V, G, ev, P, B, cnt)
                for q in range(ne):
                    if t._row[nargs + q]:
                        P[q] = P[q] + lane_sum(G + (nargs + q) * B, cnt)
                    partial[blk * ne + q] = P[q]
    finally:
        free(scratch)
    return 0
