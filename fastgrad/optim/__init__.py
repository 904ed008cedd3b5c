"""Optimizers with PyTorch's formulas, defaults and errors; each step is one C loop over the parameters.

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
