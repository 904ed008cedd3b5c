"""fastgrad: automatic differentiation with a compiled graph engine, micrograd's and PyTorch's way."""
from fastgrad._engine import (
    Var,
    abs,
    cos,
    dot,
    exp,
    log,
    maximum,
    minimum,
    relu,
    sigmoid,
    sin,
    sqrt,
    sum,
    tanh,
)

Value = Var  # micrograd code runs unchanged

__version__ = "0.1.0"

__all__ = [
    "Var", "Value", "exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid", "relu", "abs",
    "maximum", "minimum", "dot", "sum",
]
