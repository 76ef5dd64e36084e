"""stablejax: the classic recipe for training deep networks stably, in pure JAX."""

from stablejax import activations, initializers, nn

__version__ = "0.1.0"

__all__ = ["activations", "initializers", "nn", "__version__"]
