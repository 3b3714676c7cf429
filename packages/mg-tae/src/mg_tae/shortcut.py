"""The pixel shortcut: a parameter-free path from pixels to latents and back (DC-AE's residual autoencoding).

The encoder adds block means of the pixels to the latent means: per latent cell (8x8 pixels, 8 frames) and per
time part (8/P consecutive frames), latent channel k carrying pixel channel k mod C of part (k div C) mod P. The
decoder adds back, for every pixel channel and part, the mean of the latent channels that carry it, upsampled
bilinearly in space (half-pixel centres, edges clamped, so flat areas stay exact and cell borders do not show as
8x8 blocks) and linearly in time between the parts' centres, so a shape that moves inside a latent frame moves in
the decoded frames (with one part, the cell's mean is repeated over its 8 frames: static, then a jump). A TAE
trained from scratch then reconstructs flat colours and their motion from its first steps and its convolutions
learn only the residual detail (Chen et al. 2024, "Deep Compression Autoencoder for Efficient High-Resolution
Diffusion Models", section 3.2, uses space-to-channel shortcuts for the same reason)."""

from __future__ import annotations

import numpy as np
from mindspore import Tensor, mint, nn, ops
from mindspore.ops import constexpr


@constexpr
def _padding_frames(frames: int, per_latent: int) -> int:
    """Frames to append so that `frames` fills whole latent cells of `per_latent` frames."""
    return -frames % per_latent


def _linear_weights(factor: int) -> tuple[Tensor, Tensor, Tensor]:
    """Weights of x`factor` linear upsampling with half-pixel centres: output j of input i sits at offset
    d_j = (j + 0.5) / factor - 0.5 from i's centre and mixes i with its previous (d_j < 0) or next (d_j > 0)."""
    offsets = (np.arange(factor) + 0.5) / factor - 0.5
    return (
        Tensor((1.0 - np.abs(offsets)).astype(np.float32)),
        Tensor(np.maximum(-offsets, 0.0).astype(np.float32)),
        Tensor(np.maximum(offsets, 0.0).astype(np.float32)),
    )


class PixelShortcut(nn.Cell):
    """Block means of channels-last pixels (B, T, H, W, C) -> latents (B, T', h, w, C') and back.

    With `time_parts` P > 1 each latent cell carries P means, one per 8/P consecutive frames (latent channel k
    carries pixel channel k mod C of part (k div C) mod P), and the decoder interpolates them linearly in time,
    across latent frames too, as it does in space: what moves inside a latent frame moves in the decoded frames.
    With P = 1 (TAEs trained with mg-tae <= 0.3) each cell's mean is repeated over its frames.

    A clip of one frame (an image) is one latent frame, as in the TAE; longer clips are padded by repeating their
    last frame to a multiple of `temporal` frames, like the encoder's replicate padding.
    """

    def __init__(
        self, channels: int, latent_channels: int, spatial: int, temporal: int, time_parts: int = 1
    ) -> None:
        super().__init__()
        if temporal % time_parts or time_parts * channels > latent_channels:
            raise ValueError(
                f"time_parts={time_parts} must divide temporal={temporal} and time_parts x channels={channels} "
                f"must fit in latent_channels={latent_channels}"
            )
        k = np.arange(latent_channels)
        carried = (
            k // channels
        ) % time_parts * channels + k % channels  # (part, channel) of latent channel k
        spread = np.zeros((time_parts * channels, latent_channels), np.float32)
        spread[carried, k] = 1.0
        self.spread = Tensor(
            spread
        )  # (P C, C'): part p of pixel channel c -> the latent channels carrying it
        self.gather = Tensor((spread / spread.sum(1, keepdims=True)).T)  # (C', P C): mean of those channels
        self.channels = channels
        self.spatial = spatial
        self.temporal = temporal
        self.time_parts = time_parts
        self.space_weights = _linear_weights(spatial)
        self.time_weights = _linear_weights(temporal // time_parts)

    def encode(self, x):
        """Pixels (B, T, H, W, C) -> the block means spread over the latent channels (B, T', h, w, C')."""
        b, t, h, w, c = x.shape
        parts = self.time_parts
        if t == 1:  # an image is one latent frame: each of its parts is the frame itself
            x = ops.broadcast_to(x, (b, parts, h, w, c))
            t, per_latent = parts, parts
        else:
            per_latent = self.temporal
        pad = _padding_frames(t, per_latent)
        if pad > 0:
            x = mint.cat([x, ops.broadcast_to(x[:, -1:], (b, pad, h, w, c))], 1)
        s = self.spatial
        cells = (t + pad) // per_latent
        # batch and latent frames merged: MindSpore's graph mode takes at most 8 dimensions (Tile in the gradient)
        blocks = x.reshape(b * cells, parts, per_latent // parts, h // s, s, w // s, s, c)
        means = blocks.mean((2, 4, 6))  # (B T', P, h, w, C)
        means = means.transpose(0, 2, 3, 1, 4).reshape(b, cells, h // s, w // s, parts * c)
        return ops.matmul(means, self.spread)

    def decode(self, z, frames_per_latent: int):
        """Latents (B, T', h, w, C') -> per-channel means, bilinear in space, linear in time across the parts
        (repeated over the frames when P = 1; averaged when a latent frame decodes to one frame) (B, T' f, 8h, 8w, C)."""
        b, t, h, w, _ = z.shape
        c, s, parts = self.channels, self.spatial, self.time_parts
        colour = ops.matmul(z, self.gather).reshape(b, t, h, w, parts, c)
        if frames_per_latent == 1 and parts > 1:  # one frame per latent frame: the mean of its parts
            colour, parts = colour.mean(4, keep_dims=True), 1
        colour = colour.transpose(0, 1, 4, 2, 3, 5).reshape(b * t * parts, h, w * c)
        colour = _upsample_rows(colour, self.space_weights)  # (B T' P, 8h, w C)
        colour = _upsample_rows(
            colour.reshape(b * t * parts * h * s, w, c), self.space_weights
        )  # (.., 8w, C)
        pixels = h * s * w * s * c
        if parts == 1:
            frames = ops.broadcast_to(colour.reshape(b, t, 1, pixels), (b, t, frames_per_latent, pixels))
            return frames.reshape(b, t * frames_per_latent, h * s, w * s, c)
        if frames_per_latent != self.temporal:
            raise ValueError(
                f"PixelShortcut.decode: {frames_per_latent} frames per latent frame, expected 1 or {self.temporal}"
            )
        frames = _upsample_rows(colour.reshape(b, t * parts, pixels), self.time_weights)
        return frames.reshape(b, t * frames_per_latent, h * s, w * s, c)


def _upsample_rows(x, weights: tuple[Tensor, Tensor, Tensor]):
    """Linear upsampling of axis 1 of (N, L, M) by len(weights[0]), half-pixel centres, clamped edges (the edge
    rows stand in for missing neighbours)."""
    centre_weight, previous_weight, following_weight = weights
    n, size, m = x.shape
    if size == 1:
        previous, following = x, x
    else:
        previous = mint.cat([x[:, :1], x[:, :-1]], 1)
        following = mint.cat([x[:, 1:], x[:, -1:]], 1)
    s = centre_weight.shape[0]
    mixed = (
        x.reshape(n, size, 1, m) * centre_weight.reshape(1, 1, s, 1)
        + previous.reshape(n, size, 1, m) * previous_weight.reshape(1, 1, s, 1)
        + following.reshape(n, size, 1, m) * following_weight.reshape(1, 1, s, 1)
    )
    return mixed.reshape(n, size * s, m)
