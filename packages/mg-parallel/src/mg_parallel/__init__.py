"""Generic distributed-training building blocks on MindSpore's own communication library."""

from mg_parallel.__about__ import __version__

__all__ = ["__version__"]
