"""Neural-network building blocks: micrograd's `Neuron`/`Layer`/`MLP`, PyTorch's `Linear`, `Dropout`, the
containers `Sequential`/`ModuleList`/`ModuleDict`, activation and loss modules, and the functional API
(`fastgrad.nn.functional`), initialisation (`fastgrad.nn.init`) and gradient clipping (`fastgrad.nn.utils`)."""
from fastgrad.nn import functional, init, utils
from fastgrad.nn.layers import (
    MLP,
    Dropout,
    Identity,
    Layer,
    Linear,
    ModuleDict,
    ModuleList,
    Neuron,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from fastgrad.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, HingeLoss, MSELoss
from fastgrad.nn.module import IncompatibleKeys, Module

__all__ = [
    "MLP",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "Dropout",
    "HingeLoss",
    "Identity",
    "IncompatibleKeys",
    "Layer",
    "Linear",
    "MSELoss",
    "Module",
    "ModuleDict",
    "ModuleList",
    "Neuron",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "functional",
    "init",
    "utils",
]
