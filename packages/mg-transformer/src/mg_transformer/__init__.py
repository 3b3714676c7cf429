"""The Movie Gen Video transformer and its rectified-flow training objective and sampler."""

from mg_transformer.__about__ import __version__

__all__ = ["__version__"]
