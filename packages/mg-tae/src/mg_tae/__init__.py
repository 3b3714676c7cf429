"""The Temporal Autoencoder (TAE) of Movie Gen: encodes RGB video to 16-channel latents with 8x compression in time, height and width, and decodes them back."""

from mg_tae.__about__ import __version__

__all__ = ["__version__"]
