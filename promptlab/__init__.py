"""promptlab: a command-line lab for prompt engineering on local quantized models."""

__version__ = "0.1.0"
