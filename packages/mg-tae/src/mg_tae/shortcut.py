"""The pixel shortcut: a parameter-free path from pixels to latents and back (DC-AE's residual autoencoding).

The encoder adds each latent cell's mean pixel (the average over its 8x8 pixels and 8 frames) to the latent
means, latent channel k carrying pixel channel k mod C; the decoder adds back, for every pixel channel, the mean
of the latent channels that carry it, repeated over the cell. Through the shortcut alone, a clip that is constant
on every cell comes back exactly, so a TAE trained from scratch reconstructs flat colours from its first step and
its convolutions learn only the residual detail (Chen et al. 2024, "Deep Compression Autoencoder for Efficient
High-Resolution Diffusion Models", section 3.2, applies the same idea with space-to-channel shortcuts).
"""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, mint, nn, ops
from mindspore.ops import constexpr


@constexpr
def _padding_frames(frames: int, per_latent: int) -> int:
    """Frames to append so that `frames` fills whole latent cells of `per_latent` frames."""
    return -frames % per_latent


class PixelShortcut(nn.Cell):
    """Block means of channels-last pixels (B, T, H, W, C) -> latents (B, T', h, w, C') and back.

    A clip of one frame (an image) is one latent frame, as in the TAE; longer clips are padded by repeating their
    last frame to a multiple of `temporal` frames, like the encoder's replicate padding.
    """

    def __init__(self, channels: int, latent_channels: int, spatial: int, temporal: int) -> None:
        super().__init__()
        spread = np.zeros((channels, latent_channels), np.float32)
        spread[np.arange(latent_channels) % channels, np.arange(latent_channels)] = 1.0
        self.spread = Tensor(spread)  # (C, C'): pixel channel c -> every latent channel k with k mod C == c
        self.gather = Tensor((spread / spread.sum(1, keepdims=True)).T)  # (C', C): mean of those channels
        self.spatial = spatial
        self.temporal = temporal

    def encode(self, x):
        """Pixels (B, T, H, W, C) -> the block means spread over the latent channels (B, T', h, w, C')."""
        b, t, h, w, c = x.shape
        per_latent = 1 if t == 1 else self.temporal
        pad = _padding_frames(t, per_latent)
        if pad > 0:
            x = mint.cat([x, ops.broadcast_to(x[:, -1:], (b, pad, h, w, c))], 1)
        s = self.spatial
        blocks = x.reshape(b, (t + pad) // per_latent, per_latent, h // s, s, w // s, s, c)
        return ops.matmul(blocks.mean((2, 4, 6)), self.spread)

    def decode(self, z, frames_per_latent: int):
        """Latents (B, T', h, w, C') -> per-channel means repeated over each cell (B, T' * frames, 8 h, 8 w, C)."""
        b, t, h, w, _ = z.shape
        colour = ops.matmul(z, self.gather)
        c, s = colour.shape[-1], self.spatial
        cells = ops.broadcast_to(
            colour.reshape(b, t, 1, h, 1, w, 1, c), (b, t, frames_per_latent, h, s, w, s, c)
        )
        return cells.reshape(b, t * frames_per_latent, h * s, w * s, c)
