"""Optimizer update loops: one C loop over all parameters of a parameter group per step.

Parameters are leaf nodes of the engine's arena, addressed by the int64 node indices of
``fastgrad._engine.param_index``; their values and gradients are read and written in place through
``value_ptr()`` / ``grad_ptr()``. Per-parameter state (momentum buffers, moment estimates) lives in float64
NumPy arrays owned by the Python optimizer, entry ``i`` belonging to parameter ``index[i]``.

Each update follows PyTorch's single-tensor implementation operation by operation (same formulas, same
evaluation order), so float64 results agree with ``torch.optim`` to the last bit or within an ulp or so.
The per-step scalars (bias corrections, decayed learning rates) are computed by the Python caller with
Python floats, exactly as PyTorch computes them.

Frozen parameters (``requires_grad_(False)``) are skipped by every update: value and state untouched.

WARNING: ``value_ptr()``/``grad_ptr()`` move whenever the arena grows. They are fetched at the start of each
call and never kept, and the loops run with the GIL held: releasing it would let another thread create nodes,
``realloc`` the arena and leave these pointers dangling. (A step over a few thousand parameters takes
microseconds; there is nothing to gain from ``nogil`` here.)
"""
from libc.math cimport sqrt

cimport numpy as cnp

from fastgrad._engine cimport FROZEN, arena, grad_ptr, live_leaf, value_ptr
from fastgrad._types cimport f64, i64, intp

cnp.import_array()


# ---- checks shared by the entry points ----

cdef int check_index(const i64[::1] index) except -1:
    """Every entry must be a live leaf node: a stale or forged index would write into another Var (or
    outside the arena). One compare per parameter; the optimizers' own indices always pass."""
    cdef intp i
    for i in range(index.shape[0]):
        if not live_leaf(index[i]):
            raise ValueError(f"parameter index {index[i]} is not a live leaf Var")
    return 0


cdef int check_state(const i64[::1] index, const f64[::1] state, bint used, str name) except -1:
    """A state array used by this update must have one entry per parameter."""
    if used and state.shape[0] != index.shape[0]:
        raise ValueError(f"{name} has {state.shape[0]} entries for {index.shape[0]} parameters")
    return 0


cdef inline f64 lerp(f64 start, f64 end, f64 weight) noexcept nogil:
    """torch.lerp: start + weight·(end - start), evaluated from the nearer end as ATen does."""
    if weight < 0.5 and weight > -0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


cdef inline f64 coupled_grad(f64 grad, f64 value, f64 weight_decay, bint maximize) noexcept nogil:
    """The gradient an update follows: negated to maximize, plus L2 weight decay (PyTorch's order)."""
    cdef f64 g = -grad if maximize else grad
    if weight_decay != 0.0:
        g = g + weight_decay * value
    return g


# ---- zero_grad ----

def zero_grad(const i64[::1] index not None):
    """grad[index[i]] = 0.0 for every i."""
    check_index(index)
    cdef f64* grad = grad_ptr()
    cdef intp i
    for i in range(index.shape[0]):
        grad[index[i]] = 0.0


# ---- moving a model's parameters in and out as one flat array (data parallelism) ----

cdef int gather(const i64[::1] index, f64[::1] out, const f64* source) except -1:
    """out[i] = source[index[i]] (values or gradients of the parameters ``index``)."""
    check_index(index)
    check_state(index, out, True, "out")
    cdef intp i
    for i in range(index.shape[0]):
        out[i] = source[index[i]]
    return 0


cdef int scatter(const i64[::1] index, const f64[::1] values, f64* target, bint skip_frozen,
                 str name) except -1:
    """target[index[i]] = values[i], leaving frozen parameters alone when ``skip_frozen``."""
    check_index(index)
    check_state(index, values, True, name)
    cdef const f64* aux = arena().aux
    cdef intp i
    for i in range(index.shape[0]):
        if not skip_frozen or aux[index[i]] != FROZEN:
            target[index[i]] = values[i]
    return 0


def get_values(const i64[::1] index not None, f64[::1] out not None):
    """out[i] = the value of parameter index[i]: a model's parameters as one array, in one C loop."""
    gather(index, out, value_ptr())


def set_values(const i64[::1] index not None, const f64[::1] values not None):
    """The value of parameter index[i] = values[i], frozen or not (loading parameters, as ``.data =``)."""
    scatter(index, values, value_ptr(), False, "values")


def get_grads(const i64[::1] index not None, f64[::1] out not None):
    """out[i] = the gradient of parameter index[i]."""
    gather(index, out, grad_ptr())


def set_grads(const i64[::1] index not None, const f64[::1] grads not None):
    """The gradient of parameter index[i] = grads[i], except frozen parameters' (they take no gradient)."""
    scatter(index, grads, grad_ptr(), True, "grads")


# ---- SGD ----

def sgd_step(const i64[::1] index not None, f64[::1] momentum_buffer not None, f64 lr, f64 momentum,
             f64 dampening, f64 weight_decay, bint nesterov, bint maximize, bint init_buffer):
    """torch.optim.SGD: g += wd·p; buf = g (first step) or momentum·buf + (1 - dampening)·g;
    g = g + momentum·buf (nesterov) or buf; p -= lr·g. ``momentum_buffer`` is unused when momentum == 0."""
    check_index(index)
    check_state(index, momentum_buffer, momentum != 0.0, "momentum_buffer")
    sgd_loop(&index[0] if index.shape[0] else NULL, index.shape[0],
             &momentum_buffer[0] if momentum_buffer.shape[0] else NULL,
             lr, momentum, dampening, weight_decay, nesterov, maximize, init_buffer)


cdef void sgd_loop(const i64* index, intp n, f64* buf, f64 lr, f64 momentum, f64 dampening,
                   f64 weight_decay, bint nesterov, bint maximize, bint init_buffer) noexcept:
    cdef f64* value = value_ptr()
    cdef f64* grad = grad_ptr()
    cdef const f64* aux = arena().aux
    cdef intp i
    cdef i64 j
    for i in range(n):
        j = index[i]
        if aux[j] == FROZEN:     # requires_grad_(False): no update, state untouched
            continue
        value[j] = sgd_one(value[j], grad[j], &buf[i] if momentum != 0.0 else NULL, lr, momentum, dampening,
                           weight_decay, nesterov, maximize, init_buffer)


cdef inline f64 sgd_one(f64 p, f64 grad, f64* buf, f64 lr, f64 momentum, f64 dampening, f64 weight_decay,
                        bint nesterov, bint maximize, bint init_buffer) noexcept nogil:
    """One parameter's SGD update (its new value); ``buf`` (its momentum buffer) is NULL without momentum."""
    cdef f64 g = coupled_grad(grad, p, weight_decay, maximize)
    cdef f64 b
    if buf != NULL:
        if init_buffer:
            b = g
        else:
            b = buf[0] * momentum + (1.0 - dampening) * g
        buf[0] = b
        g = g + momentum * b if nesterov else b
    return p + -lr * g


# ---- the same updates over a float64 Tensor's elements (its data, gradient and state arrays) ----

cdef inline bint f64_array(object a, bint writeable) noexcept:
    """Is ``a`` a float64, C-contiguous, aligned, native (and, if asked, writeable) ndarray of any shape?"""
    if not cnp.PyArray_Check(a):
        return False
    return (cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_DOUBLE and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>a)
            and cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)
            and (not writeable or cnp.PyArray_ISWRITEABLE(<cnp.ndarray>a)))


cdef f64 _NO_ELEMENTS = 0.0


cdef f64* elements(object a, intp n, str name) except NULL:
    """The data of array ``a`` (already checked by f64_array); ValueError unless it has ``n`` elements."""
    cdef intp size = <intp>cnp.PyArray_SIZE(<cnp.ndarray>a)
    if size != n:
        raise ValueError(f"{name} has {size} entries for {n} parameters")
    cdef f64* data = <f64*>cnp.PyArray_DATA(<cnp.ndarray>a)
    if data == NULL:        # a zero-size array may have none: any non-NULL pointer serves, nothing is read
        return &_NO_ELEMENTS
    return data


def sgd_array(param, grad, momentum_buffer, f64 lr, f64 momentum, f64 dampening, f64 weight_decay,
              bint nesterov, bint maximize, bint init_buffer):
    """``sgd_step``'s update on the elements of a float64 Tensor: its data ``param``, gradient ``grad`` and,
    with momentum, its buffer (None without), arrays of any shape: the same operations per element, so a
    Tensor moves exactly as Vars of the same numbers do. Returns False, having done nothing, unless every
    array is float64 and C-contiguous (and the written ones writeable): the caller then takes NumPy's path.
    ValueError for arrays of different sizes."""
    if not (f64_array(param, True) and f64_array(grad, False)
            and (momentum == 0.0 or f64_array(momentum_buffer, True))):
        return False
    cdef intp n = <intp>cnp.PyArray_SIZE(<cnp.ndarray>param), i
    cdef f64* p = elements(param, n, "param")
    cdef const f64* g = elements(grad, n, "grad")
    cdef f64* buf = elements(momentum_buffer, n, "momentum_buffer") if momentum != 0.0 else NULL
    for i in range(n):
        p[i] = sgd_one(p[i], g[i], buf + i if buf != NULL else NULL, lr, momentum, dampening, weight_decay,
                       nesterov, maximize, init_buffer)
    return True


def sgd_arrays(list params, list grads, f64 lr, f64 weight_decay, bint maximize):
    """``sgd_array`` without momentum over a group's Tensors at once: ``params[i]`` (data arrays) updated from
    ``grads[i]`` (None: skipped). Returns False, having updated nothing, unless every pair is float64,
    C-contiguous (the data writeable) and of one size: the caller then updates them one by one."""
    cdef Py_ssize_t n = len(params), j
    cdef intp size, i
    cdef f64* p
    cdef const f64* g
    if len(grads) != n:
        raise ValueError(f"sgd_arrays: {n} parameters but {len(grads)} gradients")
    for j in range(n):
        if grads[j] is not None and not (f64_array(params[j], True) and f64_array(grads[j], False)
                                         and cnp.PyArray_SIZE(<cnp.ndarray>params[j])
                                         == cnp.PyArray_SIZE(<cnp.ndarray>grads[j])):
            return False
    for j in range(n):
        if grads[j] is None:
            continue
        size = <intp>cnp.PyArray_SIZE(<cnp.ndarray>params[j])
        p = <f64*>cnp.PyArray_DATA(<cnp.ndarray>params[j])
        g = <const f64*>cnp.PyArray_DATA(<cnp.ndarray>grads[j])
        for i in range(size):
            p[i] = sgd_one(p[i], g[i], NULL, lr, 0.0, 0.0, weight_decay, False, maximize, False)
    return True


# ---- Adagrad ----

def adagrad_step(const i64[::1] index not None, f64[::1] state_sum not None, f64 clr, f64 eps,
                 f64 weight_decay, bint maximize):
    """torch.optim.Adagrad: g += wd·p; sum += g·g; p -= clr·g / (√sum + eps), where the caller computed
    clr = lr / (1 + (step - 1)·lr_decay)."""
    check_index(index)
    check_state(index, state_sum, True, "sum")
    if index.shape[0]:
        adagrad_loop(&index[0], index.shape[0], &state_sum[0], clr, eps, weight_decay, maximize)


cdef void adagrad_loop(const i64* index, intp n, f64* state_sum, f64 clr, f64 eps, f64 weight_decay,
                       bint maximize) noexcept:
    cdef f64* value = value_ptr()
    cdef f64* grad = grad_ptr()
    cdef const f64* aux = arena().aux
    cdef intp i
    cdef i64 j
    cdef f64 g, s
    for i in range(n):
        j = index[i]
        if aux[j] == FROZEN:     # requires_grad_(False): no update, state untouched
            continue
        g = coupled_grad(grad[j], value[j], weight_decay, maximize)
        s = state_sum[i] + 1.0 * g * g
        state_sum[i] = s
        value[j] = value[j] + -clr * g / (sqrt(s) + eps)


# ---- RMSprop ----

def rmsprop_step(const i64[::1] index not None, f64[::1] square_avg not None, f64[::1] grad_avg not None,
                 f64[::1] momentum_buffer not None, f64 lr, f64 alpha, f64 eps, f64 weight_decay,
                 f64 momentum, bint centered, bint maximize):
    """torch.optim.RMSprop: g += wd·p; v = α·v + (1-α)·g²; avg = √(v - ḡ²) with ḡ = lerp(ḡ, g, 1-α) when
    centered, else √v; avg += eps; then buf = momentum·buf + g/avg, p -= lr·buf (momentum > 0) or
    p -= lr·g/avg."""
    check_index(index)
    check_state(index, square_avg, True, "square_avg")
    check_state(index, grad_avg, centered, "grad_avg")
    check_state(index, momentum_buffer, momentum > 0.0, "momentum_buffer")
    if index.shape[0]:
        rmsprop_loop(&index[0], index.shape[0], &square_avg[0],
                     &grad_avg[0] if centered else NULL,
                     &momentum_buffer[0] if momentum > 0.0 else NULL,
                     lr, alpha, eps, weight_decay, momentum, centered, maximize)


cdef void rmsprop_loop(const i64* index, intp n, f64* square_avg, f64* grad_avg, f64* buf, f64 lr,
                       f64 alpha, f64 eps, f64 weight_decay, f64 momentum, bint centered,
                       bint maximize) noexcept:
    cdef f64* value = value_ptr()
    cdef f64* grad = grad_ptr()
    cdef const f64* aux = arena().aux
    cdef intp i
    cdef i64 j
    cdef f64 g, v, ga, avg, b
    for i in range(n):
        j = index[i]
        if aux[j] == FROZEN:     # requires_grad_(False): no update, state untouched
            continue
        g = coupled_grad(grad[j], value[j], weight_decay, maximize)
        v = square_avg[i] * alpha + (1.0 - alpha) * g * g
        square_avg[i] = v
        if centered:
            ga = lerp(grad_avg[i], g, 1.0 - alpha)
            grad_avg[i] = ga
            avg = sqrt(v + -1.0 * ga * ga)
        else:
            avg = sqrt(v)
        avg = avg + eps
        if momentum > 0.0:
            b = buf[i] * momentum + 1.0 * g / avg
            buf[i] = b
            value[j] = value[j] + -lr * b
        else:
            value[j] = value[j] + -lr * g / avg


# ---- Adam, AdamW ----

def adam_step(const i64[::1] index not None, f64[::1] exp_avg not None, f64[::1] exp_avg_sq not None,
              f64[::1] max_exp_avg_sq not None, f64 lr, f64 beta1, f64 beta2, f64 eps, f64 weight_decay,
              f64 step_size, f64 bias_correction2_sqrt, bint decoupled_weight_decay, bint amsgrad,
              bint maximize):
    """torch.optim.Adam (AdamW with ``decoupled_weight_decay``): p *= 1 - lr·wd (AdamW) or g += wd·p (Adam);
    m = lerp(m, g, 1-β1); v = β2·v + (1-β2)·g²; v̂ = max(v̂, v) (amsgrad);
    p -= step_size·m / (√v / √bc2 + eps), with the caller's step_size = lr / (1 - β1^t), bc2 = 1 - β2^t."""
    check_index(index)
    check_state(index, exp_avg, True, "exp_avg")
    check_state(index, exp_avg_sq, True, "exp_avg_sq")
    check_state(index, max_exp_avg_sq, amsgrad, "max_exp_avg_sq")
    if index.shape[0]:
        adam_loop(&index[0], index.shape[0], &exp_avg[0], &exp_avg_sq[0],
                  &max_exp_avg_sq[0] if amsgrad else NULL, lr, beta1, beta2, eps, weight_decay,
                  step_size, bias_correction2_sqrt, decoupled_weight_decay, amsgrad, maximize)


cdef void adam_loop(const i64* index, intp n, f64* exp_avg, f64* exp_avg_sq, f64* max_exp_avg_sq, f64 lr,
                    f64 beta1, f64 beta2, f64 eps, f64 weight_decay, f64 step_size,
                    f64 bias_correction2_sqrt, bint decoupled, bint amsgrad, bint maximize) noexcept:
    cdef f64* value = value_ptr()
    cdef f64* grad = grad_ptr()
    cdef const f64* aux = arena().aux
    cdef intp i
    cdef i64 j
    for i in range(n):
        j = index[i]
        if aux[j] == FROZEN:     # requires_grad_(False): no update, state untouched
            continue
        value[j] = adam_one(value[j], grad[j], &exp_avg[i], &exp_avg_sq[i],
                            &max_exp_avg_sq[i] if amsgrad else NULL, lr, beta1, beta2, eps, weight_decay,
                            step_size, bias_correction2_sqrt, decoupled, maximize)


cdef inline f64 adam_one(f64 p, f64 grad, f64* exp_avg, f64* exp_avg_sq, f64* max_exp_avg_sq, f64 lr,
                         f64 beta1, f64 beta2, f64 eps, f64 weight_decay, f64 step_size,
                         f64 bias_correction2_sqrt, bint decoupled, bint maximize) noexcept nogil:
    """One parameter's Adam update (its new value); ``max_exp_avg_sq`` is NULL without amsgrad."""
    cdef f64 g = -grad if maximize else grad
    cdef f64 m, v, vmax
    if weight_decay != 0.0:
        if decoupled:
            p = p * (1.0 - lr * weight_decay)
        else:
            g = g + weight_decay * p
    m = lerp(exp_avg[0], g, 1.0 - beta1)
    exp_avg[0] = m
    v = exp_avg_sq[0] * beta2 + (1.0 - beta2) * g * g
    exp_avg_sq[0] = v
    if max_exp_avg_sq != NULL:
        vmax = max_exp_avg_sq[0]
        if v > vmax or v != v:  # torch.maximum propagates nan
            vmax = v
        max_exp_avg_sq[0] = vmax
        v = vmax
    return p + -step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)


cdef void adam_plain(f64* param, const f64* grad, f64* exp_avg, f64* exp_avg_sq, intp n, f64 w1, f64 beta2,
                     f64 eps, f64 step_size, f64 bias_correction2_sqrt) noexcept nogil:
    """adam_one without weight decay, maximize or amsgrad, for 1 - beta1 in (-0.5, 0.5) (lerp's first
    form): the same operations in the same order, so the same bits."""
    cdef intp i
    cdef f64 g, m, v
    for i in range(n):
        g = grad[i]
        m = exp_avg[i] + w1 * (g - exp_avg[i])
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2 + (1.0 - beta2) * g * g
        exp_avg_sq[i] = v
        param[i] = param[i] + -step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)


def adam_array(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, f64 lr, f64 beta1, f64 beta2, f64 eps,
               f64 weight_decay, f64 step_size, f64 bias_correction2_sqrt, bint decoupled_weight_decay,
               bint maximize):
    """``adam_step``'s update on the elements of a float64 Tensor: its data, gradient and state arrays (any
    shape; ``max_exp_avg_sq`` None without amsgrad): the same operations per element, so a Tensor moves
    exactly as Vars of the same numbers do. Returns False, having done nothing, unless every array is
    float64 and C-contiguous (the written ones writeable). ValueError for arrays of different sizes."""
    if not (f64_array(param, True) and f64_array(grad, False) and f64_array(exp_avg, True)
            and f64_array(exp_avg_sq, True) and (max_exp_avg_sq is None or f64_array(max_exp_avg_sq, True))):
        return False
    cdef intp n = <intp>cnp.PyArray_SIZE(<cnp.ndarray>param), i
    cdef f64* p = elements(param, n, "param")
    cdef const f64* g = elements(grad, n, "grad")
    cdef f64* m = elements(exp_avg, n, "exp_avg")
    cdef f64* v = elements(exp_avg_sq, n, "exp_avg_sq")
    cdef f64* vmax = elements(max_exp_avg_sq, n, "max_exp_avg_sq") if max_exp_avg_sq is not None else NULL
    cdef f64 w1 = 1.0 - beta1
    if vmax == NULL and weight_decay == 0.0 and not maximize and -0.5 < w1 < 0.5:
        # the common case, with the branches of adam_one decided once: a loop the compiler vectorizes
        adam_plain(p, g, m, v, n, w1, beta2, eps, step_size, bias_correction2_sqrt)
        return True
    for i in range(n):
        p[i] = adam_one(p[i], g[i], m + i, v + i, vmax + i if vmax != NULL else NULL, lr, beta1, beta2, eps,
                        weight_decay, step_size, bias_correction2_sqrt, decoupled_weight_decay, maximize)
    return True
