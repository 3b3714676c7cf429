"""Training data for video diffusion models, returned as numpy arrays and plain Python objects (no deep learning framework needed)."""

from mg_data.__about__ import __version__

__all__ = ["__version__"]
