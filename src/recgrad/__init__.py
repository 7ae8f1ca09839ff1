"""recgrad: neural-network fundamentals from first principles in NumPy, for embedding recommenders."""

from recgrad.gradcheck import gradcheck

__version__ = "0.1.0"
__all__ = ["gradcheck", "__version__"]
