"""Shared test helpers: the implementations under test and numeric checks."""
import math
import operator
import os
import subprocess
import sys

import pytest

import fastgrad
from fastgrad import _optable, reference

# `from conftest import ...` works under any --import-mode
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

IMPLEMENTATIONS = {"engine": fastgrad, "reference": reference}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def fg(request):
    """The module under test: the compiled engine (`fastgrad`), then the pure-Python `fastgrad.reference`."""
    return IMPLEMENTATIONS[request.param]


def central_difference(f, x, h=1e-6):
    """(f(x + h) - f(x - h)) / 2h for a float function f, with h relative to |x|."""
    h *= max(1.0, math.fabs(x))
    return (f(x + h) - f(x - h)) / (2.0 * h)


def value_and_grads(fg, f, *xs):
    """f(*leaves).data and the leaves' gradients after one backward(), for leaves made from xs."""
    leaves = [fg.Var(x) for x in xs]
    y = f(*leaves)
    y.backward()
    return y.data, [v.grad for v in leaves]


def run_python(code, timeout=120):
    """Run code in a fresh interpreter that imports the same fastgrad as the tests; return stdout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"child failed with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def call(fg, op, args, k=1.5):
    """Apply op-table row `op` to `args` through fastgrad's public API, as a user would: its operator
    (`a + b`, `a + k`, `k - a`), its method (`a.exp()`, `a.leaky_relu(k)`), its dunder (`-a`) or its function
    (`fg.maximum(a, b)`, `fg.sum(args)`). `k` is the constant of a constant-operand op or the parameter."""
    name = op.name
    if name == "sum":
        return fg.sum(args)
    if name == "dot":
        return fg.dot(args[0::2], args[1::2])
    if op.form == _optable.CONST:
        for o in _optable.OPERATORS:
            if o.var_const == name and o.const_sign > 0:
                return getattr(operator, o.dunder)(args[0], k)
            if o.const_var == name:
                return getattr(operator, o.dunder)(k, args[0])
        raise AssertionError(f"no operator makes {name}")
    if op.form == _optable.BINARY:
        for o in _optable.OPERATORS:
            if o.var_var == name:
                return getattr(operator, o.dunder)(args[0], args[1])
        return getattr(fg, op.function)(args[0], args[1])
    if op.method:
        return getattr(args[0], op.method)(*([k] if op.param else []))
    if op.dunder:
        return getattr(operator, op.dunder.strip("_"))(args[0])
    return getattr(fg, op.function)(args[0], *([k] if op.param else []))


def n_operands(op):
    """How many operands `call` takes for `op` (n-ary ops get a few)."""
    return {"sum": 4, "dot": 6}.get(op.name, op.arity)


# every op with derivatives (all but leaf and custom), in table order
DIFFERENTIABLE = [op for op in _optable.OPS if op.name not in ("leaf", "custom")]
