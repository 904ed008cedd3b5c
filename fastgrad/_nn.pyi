"""Type stubs of the compiled nn kernels (fastgrad._nn); see src/fastgrad/_nn.pyx."""
from typing import Sequence, SupportsFloat, Union

from fastgrad._engine import Var

_ScalarLike = Union[Var, int, float, SupportsFloat]

def affine(
    rows: Sequence[Sequence[Var]], bias: Sequence[Var] | None, xs: Sequence[_ScalarLike],
    activation: str | None = None,
) -> list[Var]: ...
