"""The pixel shortcut: a parameter-free path from pixels to latents and back (DC-AE's residual autoencoding).

The encoder adds each latent cell's mean pixel (the average over its 8x8 pixels and 8 frames) to the latent
means, latent channel k carrying pixel channel k mod C; the decoder adds back, for every pixel channel, the mean
of the latent channels that carry it, upsampled bilinearly in space (half-pixel centres, edges clamped, so flat
areas stay exact and cell borders do not show as 8x8 blocks) and repeated over the cell's frames. A TAE trained
from scratch then reconstructs flat colours from its first steps and its convolutions learn only the residual
detail (Chen et al. 2024, "Deep Compression Autoencoder for Efficient High-Resolution Diffusion Models", section
3.2, uses space-to-channel shortcuts for the same reason).
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
        offsets = (np.arange(spatial) + 0.5) / spatial - 0.5  # sub-pixel offsets from the cell centre
        self.centre_weight = Tensor((1.0 - np.abs(offsets)).astype(np.float32))
        self.previous_weight = Tensor(np.maximum(-offsets, 0.0).astype(np.float32))
        self.following_weight = Tensor(np.maximum(offsets, 0.0).astype(np.float32))

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
        """Latents (B, T', h, w, C') -> per-channel means, bilinear in space, repeated in time (B, T' f, 8h, 8w, C)."""
        b, t, h, w, _ = z.shape
        colour = ops.matmul(z, self.gather)
        c, s = colour.shape[-1], self.spatial
        colour = self._upsample_rows(colour.reshape(b * t, h, w * c))  # (B T', 8h, w C)
        colour = self._upsample_rows(colour.reshape(b * t * h * s, w, c))  # (B T' 8h, 8w, C)
        frames = ops.broadcast_to(
            colour.reshape(b, t, 1, h * s * w * s * c), (b, t, frames_per_latent, h * s * w * s * c)
        )
        return frames.reshape(b, t * frames_per_latent, h * s, w * s, c)

    def _upsample_rows(self, x):
        """Linear x`spatial` upsampling of axis 1 of (N, L, M) with half-pixel centres and clamped edges.

        Output row j of row i sits at offset d_j = (j + 0.5) / s - 0.5 from its centre: it mixes row i with the
        previous row (d_j < 0) or the next one (d_j > 0), the edge rows standing in for missing ones.
        """
        n, size, m = x.shape
        if size == 1:
            previous, following = x, x
        else:
            previous = mint.cat([x[:, :1], x[:, :-1]], 1)
            following = mint.cat([x[:, 1:], x[:, -1:]], 1)
        s = self.spatial
        mixed = (
            x.reshape(n, size, 1, m) * self.centre_weight.reshape(1, 1, s, 1)
            + previous.reshape(n, size, 1, m) * self.previous_weight.reshape(1, 1, s, 1)
            + following.reshape(n, size, 1, m) * self.following_weight.reshape(1, 1, s, 1)
        )
        return mixed.reshape(n, size * s, m)
