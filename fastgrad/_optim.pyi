"""Type stubs of the compiled optimizer loops (fastgrad._optim); see src/fastgrad/_optim.pyx."""
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

_Index: TypeAlias = npt.NDArray[np.int64]
_State: TypeAlias = npt.NDArray[np.float64]

def zero_grad(index: _Index) -> None: ...
def sgd_step(index: _Index, momentum_buffer: _State, lr: float, momentum: float, dampening: float,
             weight_decay: float, nesterov: bool, maximize: bool, init_buffer: bool) -> None: ...
def adagrad_step(index: _Index, state_sum: _State, clr: float, eps: float, weight_decay: float,
                 maximize: bool) -> None: ...
def rmsprop_step(index: _Index, square_avg: _State, grad_avg: _State, momentum_buffer: _State, lr: float,
                 alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool,
                 maximize: bool) -> None: ...
def adam_step(index: _Index, exp_avg: _State, exp_avg_sq: _State, max_exp_avg_sq: _State, lr: float,
              beta1: float, beta2: float, eps: float, weight_decay: float, step_size: float,
              bias_correction2_sqrt: float, decoupled_weight_decay: bool, amsgrad: bool,
              maximize: bool) -> None: ...
def adam_array(param: _State, grad: _State, exp_avg: _State, exp_avg_sq: _State,
               max_exp_avg_sq: _State | None, lr: float, beta1: float, beta2: float, eps: float,
               weight_decay: float, step_size: float, bias_correction2_sqrt: float,
               decoupled_weight_decay: bool, maximize: bool) -> None: ...
def sgd_array(param: _State, grad: _State, momentum_buffer: _State | None, lr: float, momentum: float,
              dampening: float, weight_decay: float, nesterov: bool, maximize: bool,
              init_buffer: bool) -> None: ...
