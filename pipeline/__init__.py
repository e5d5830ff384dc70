"""microfit: shrink a PyTorch model until it fits a microcontroller, prove it on the device."""

__version__ = "0.1.0"
