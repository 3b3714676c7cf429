"""The Temporal Autoencoder (TAE) of Movie Gen: encodes RGB video to 16-channel latents with 8x compression in time, height and width, and decodes them back."""

from mg_tae.__about__ import __version__
from mg_tae.checkpoint import LoadReport
from mg_tae.config import TAEConfig
from mg_tae.inflate import InflationReport, inflate_from_diffusers
from mg_tae.losses import kl_loss, l1_loss, outlier_penalty_loss
from mg_tae.lpips import LPIPS
from mg_tae.metrics import psnr, ssim
from mg_tae.model import DiagonalGaussian, TemporalAutoencoder

__all__ = [
    "LPIPS",
    "DiagonalGaussian",
    "InflationReport",
    "LoadReport",
    "TAEConfig",
    "TemporalAutoencoder",
    "__version__",
    "inflate_from_diffusers",
    "kl_loss",
    "l1_loss",
    "outlier_penalty_loss",
    "psnr",
    "ssim",
]
