"""The Temporal Autoencoder (TAE) of Movie Gen: encodes RGB video to 16-channel latents with 8x compression in time, height and width, and decodes them back."""

from mg_tae.__about__ import __version__
from mg_tae.checkpoint import LoadReport
from mg_tae.config import TAEConfig
from mg_tae.model import DiagonalGaussian, TemporalAutoencoder

__all__ = [
    "DiagonalGaussian",
    "LoadReport",
    "TAEConfig",
    "TemporalAutoencoder",
    "__version__",
]
