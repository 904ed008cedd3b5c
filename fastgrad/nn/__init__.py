"""Neural-network building blocks: micrograd's `Neuron`/`Layer`/`MLP`, PyTorch's `Linear`/`Sequential`,
activation and loss modules, and the functional API (`fastgrad.nn.functional`)."""
from fastgrad.nn import functional, init, utils
from fastgrad.nn.layers import MLP, Identity, Layer, Linear, Neuron, ReLU, Sequential, Sigmoid, Tanh
from fastgrad.nn.loss import BCEWithLogitsLoss, CrossEntropyLoss, HingeLoss, MSELoss
from fastgrad.nn.module import IncompatibleKeys, Module

__all__ = [
    "MLP",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HingeLoss",
    "Identity",
    "IncompatibleKeys",
    "Layer",
    "Linear",
    "MSELoss",
    "Module",
    "Neuron",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "functional",
    "init",
    "utils",
]
