"""Optimizers with PyTorch's formulas, defaults and errors.

Parameters are leaf `Var`s and `Tensor`s that require grad, mixed freely within a group. Each step is one
C loop over a group's Vars, and one vectorized in-place NumPy update per Tensor performing the same
operations in the same order (float64 Tensors move bit for bit as Vars of the same numbers would). A
Tensor whose `.grad` is None is skipped, as in PyTorch; `zero_grad()` zeroes gradients in place.

Learning-rate schedules live in `fastgrad.optim.lr_scheduler` (as in PyTorch): LambdaLR, StepLR,
MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR, OneCycleLR, ReduceLROnPlateau, SequentialLR.
"""
from fastgrad.optim import lr_scheduler
from fastgrad.optim.adagrad import Adagrad
from fastgrad.optim.adam import Adam, AdamW
from fastgrad.optim.optimizer import Optimizer
from fastgrad.optim.rmsprop import RMSprop
from fastgrad.optim.sgd import SGD

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]
