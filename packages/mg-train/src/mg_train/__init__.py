"""The composition layer: configs, training loops, checkpoints, inference pipelines and the `mg-train` command."""

from mg_train.__about__ import __version__

__all__ = ["__version__"]
