"""Neural-network building blocks: micrograd's `Neuron`/`Layer`/`MLP`, PyTorch's `Linear`, `Dropout`, the
containers `Sequential`/`ModuleList`/`ModuleDict`, activation and loss modules, the functional API
(`fastgrad.nn.functional`), initialisation (`fastgrad.nn.init`), gradient clipping (`fastgrad.nn.utils`)."""
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
from fastgrad.nn.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    HingeLoss,
    HuberLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from fastgrad.nn.module import IncompatibleKeys, Module

__all__ = [
    "MLP",
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "Dropout",
    "HingeLoss",
    "HuberLoss",
    "Identity",
    "IncompatibleKeys",
    "L1Loss",
    "Layer",
    "Linear",
    "MSELoss",
    "Module",
    "ModuleDict",
    "ModuleList",
    "NLLLoss",
    "Neuron",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SmoothL1Loss",
    "Tanh",
    "functional",
    "init",
    "utils",
]
