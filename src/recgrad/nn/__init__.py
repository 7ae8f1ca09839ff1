"""Layers as forward/backward pairs: Parameter, Module, Sequential and the modules built on them."""

from recgrad.nn.module import Module, Parameter, RowSparseGrad, Sequential

__all__ = ["Module", "Parameter", "RowSparseGrad", "Sequential"]
