"""Layers as forward/backward pairs: Parameter, Module, Sequential and the modules built on them."""

from recgrad.nn.activation import GELU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Swish, Tanh
from recgrad.nn.linear import Linear
from recgrad.nn.module import Module, Parameter, RowSparseGrad, Sequential

__all__ = ["Linear", "Module", "Parameter", "RowSparseGrad", "Sequential"]
__all__ += ["GELU", "LogSoftmax", "ReLU", "Sigmoid", "SiLU", "Softmax", "Swish", "Tanh"]
