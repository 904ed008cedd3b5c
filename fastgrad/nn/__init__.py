"""Neural-network building blocks: micrograd's `Neuron`/`Layer`/`MLP`, PyTorch's `Linear`/`Sequential`,
activation and loss modules, and the functional API (`fastgrad.nn.functional`)."""
from fastgrad.nn import functional
from fastgrad.nn.layers import MLP, Identity, Layer, Linear, Neuron, ReLU, Sequential, Sigmoid, Tanh
from fastgrad.nn.loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HingeLoss, HuberLoss, L1Loss,
                             MSELoss, NLLLoss, SmoothL1Loss)
from fastgrad.nn.module import IncompatibleKeys, Module

__all__ = [
    "MLP",
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HingeLoss",
    "HuberLoss",
    "Identity",
    "IncompatibleKeys",
    "L1Loss",
    "Layer",
    "Linear",
    "MSELoss",
    "Module",
    "NLLLoss",
    "Neuron",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SmoothL1Loss",
    "Tanh",
    "functional",
]
