"""fastgrad: automatic differentiation with a compiled graph engine, micrograd's and PyTorch's way."""
from fastgrad import _optable
from fastgrad._engine import *  # noqa: F403  Var and the op table's functions (generated _engine.__all__)
from fastgrad._engine import Var
from fastgrad.custom import Function, custom_op
from fastgrad.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from fastgrad.gradcheck import GradcheckError, GradcheckResult, gradcheck, gradgradcheck
from fastgrad.inspection import draw, graph_table, stats, to_dot
from fastgrad.tracing import Batched, Compiled, TraceError, compile, vmap
from fastgrad.tensor import Tensor, concatenate, stack, where
from fastgrad.transforms import grad, hessian, hvp, jacfwd, jacobian, jacrev, jvp, value_and_grad, vjp

Value = Var  # micrograd code runs unchanged

__version__ = "0.1.0"

__all__ = [
    "Var", "Value", "Tensor", "where", "concatenate", "stack", *_optable.PUBLIC_FUNCTIONS,
    "grad", "value_and_grad", "vjp", "jvp", "jacobian", "jacfwd", "jacrev", "hessian", "hvp",
    "graph_table", "to_dot", "draw", "stats", "gradcheck", "gradgradcheck", "GradcheckError",
    "GradcheckResult", "custom_op", "Function", "compile", "Compiled", "vmap", "Batched", "TraceError",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "nn", "optim",
]

from fastgrad import nn, optim  # noqa: E402  (fg.nn.MLP, fg.optim.SGD; neither imports this package's top)
