from typing import Optional

import numpy as np
import numpy.typing as npt

def value(op: int, a: npt.NDArray[np.float64], b: Optional[npt.NDArray[np.float64]], k: float,
          out: npt.NDArray[np.float64]) -> None: ...
def adjoint(op: int, a: npt.NDArray[np.float64], b: Optional[npt.NDArray[np.float64]], k: float,
            y: npt.NDArray[np.float64], g: npt.NDArray[np.float64], ga: npt.NDArray[np.float64],
            gb: Optional[npt.NDArray[np.float64]]) -> None: ...
