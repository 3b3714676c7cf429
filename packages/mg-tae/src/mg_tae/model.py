"""The Temporal Autoencoder: the SD3.5 VAE inflated to 2.5D (Movie Gen), in one file.

Layouts. Public tensors follow docs/contracts.md: pixels (B, C, T, H, W) in [-1, 1], latents (B, C', ceil(T/8),
H/8, W/8). Inside, activations are channels-last (B, T, H, W, C): on CPU every conv is then one matmul over
contiguous row windows (see `mg_tae.conv`), and GroupNorm, attention and resampling are matmuls or contiguous
copies too. Parameter names follow diffusers' AutoencoderKL (`encoder.down_blocks.0.resnets.1.conv1...`), with
each inflated conv split into `.spatial` (the 2D conv) and `.temporal` (the 3-tap conv over time) sub-cells.

Temporal layers start as identities (centre-tap temporal kernels, zero output projection in temporal attention),
so a freshly built or inflated TAE equals the 2D VAE applied frame by frame on single images (T = 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.ops import constexpr

from mg_tae.config import TAEConfig
from mg_tae.conv import (
    conv3x3_native,
    conv3x3_rows,
    conv3x3_rows_fast,
    conv3x3_stride2_rows,
    conv3x3_stride2_rows_fast,
    default_backend,
    pointwise_rows,
    smaller,
    temporal_conv3_native,
    temporal_conv3_rows,
    temporal_conv3_rows_fast,
    temporal_conv3_stride2_rows,
    temporal_conv3_stride2_rows_fast,
)
from mg_tae.shortcut import PixelShortcut
from mg_tae.speed import prefer_synchronous_launch, warn_if_slow_convolution

_BMM_TB = ops.BatchMatMul(transpose_b=True)

# Max elements of one attention score block; larger attention runs in chunks of frames / pixels.
MAX_ATTENTION_ELEMENTS = 32 * 2**20


class _Init:
    """Deterministic parameter initialisation (PyTorch's default conv/linear init) from one numpy generator."""

    def __init__(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def uniform(self, shape: tuple[int, ...], fan_in: int) -> Tensor:
        bound = 1.0 / math.sqrt(fan_in)
        return Tensor(self.rng.uniform(-bound, bound, size=shape).astype(np.float32))


def _param(value: np.ndarray | Tensor, name: str) -> Parameter:
    if isinstance(value, np.ndarray):
        value = Tensor(value.astype(np.float32))
    return Parameter(value, name=name)


class SpatialConv(nn.Cell):
    """A 2D conv (k = 1 or 3, stride 1 or 2) applied to every frame of a channels-last clip (B, T, H, W, C)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        init: _Init,
        backend: str,
        stride: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        fan_in = c_in * kernel * kernel
        self.weight = _param(init.uniform((c_out, c_in, kernel, kernel), fan_in), "weight")
        self.bias = _param(init.uniform((c_out,), fan_in), "bias") if bias else None
        self.kernel = kernel
        self.stride = stride
        self.backend = backend

    def construct(self, x):
        b, t, h, w, c = x.shape
        frames = x.reshape(b * t, h, w, c)
        if self.kernel == 1:
            y = pointwise_rows(frames, self.weight, self.bias)
        elif self.backend == "native":
            y = conv3x3_native(frames, self.weight, self.bias, self.stride)
        elif self.stride == 1 and (self.bias is None or self.backend == "matmul_autograd"):
            y = conv3x3_rows(frames, self.weight, self.bias)  # autograd (the fast-backward cells need a bias)
        elif self.bias is None or self.backend == "matmul_autograd":
            y = conv3x3_stride2_rows(frames, self.weight, self.bias)
        elif self.stride == 1:
            y = conv3x3_rows_fast(frames, self.weight, self.bias)  # hand-written backward
        else:
            y = conv3x3_stride2_rows_fast(frames, self.weight, self.bias)
        return y.reshape(b, t, y.shape[1], y.shape[2], y.shape[3])


@constexpr
def _index(flag: bool) -> int:
    """1 for True, 0 for False: an index into a pair of methods (graph-safe)."""
    return 1 if flag else 0


@constexpr
def _is_single_frame(t: int) -> int:
    """1 if a clip has one frame (an image) else 0: an index into a pair of methods (a graph-safe shape branch)."""
    return 1 if t == 1 else 0


class TemporalConv(nn.Cell):
    """A 3-tap conv over time with replicate padding (stride 1 keeps T, stride 2 gives ceil(T/2)).

    Initialised as an identity: the centre tap is the identity matrix, the other taps and the bias are zero.
    """

    def __init__(self, channels: int, backend: str, stride: int = 1) -> None:
        super().__init__()
        weight = np.zeros((channels, channels, 3), np.float32)
        weight[np.arange(channels), np.arange(channels), 1] = 1.0
        self.weight = _param(weight, "weight")
        self.bias = _param(np.zeros((channels,), np.float32), "bias")
        self.stride = stride
        self.backend = backend

    def construct(self, x):
        if self.backend == "native":
            return temporal_conv3_native(x, self.weight, self.bias, self.stride)
        return (self._clip, self._single_frame)[_is_single_frame(x.shape[1])](x)

    def _single_frame(self, x):
        # One frame, replicate-padded, is the same frame under all three taps (for stride 1 and 2): a 1x1 conv
        # with the summed taps. The general path would compute and drop two padding frames per frame (~6x slower).
        return pointwise_rows(x, self.weight.sum(-1), self.bias)

    def _clip(self, x):
        if self.backend == "matmul_autograd":
            return (temporal_conv3_rows if self.stride == 1 else temporal_conv3_stride2_rows)(
                x, self.weight, self.bias
            )
        if self.stride == 1:
            return temporal_conv3_rows_fast(x, self.weight, self.bias)  # hand-written backward
        return temporal_conv3_stride2_rows_fast(x, self.weight, self.bias)


class Conv2p5d(nn.Cell):
    """Movie Gen's inflated conv: a spatial 3x3 conv on every frame, then a temporal 3-tap conv."""

    def __init__(self, c_in: int, c_out: int, init: _Init, backend: str) -> None:
        super().__init__()
        self.spatial = SpatialConv(c_in, c_out, 3, init, backend)
        self.temporal = TemporalConv(c_out, backend)

    def construct(self, x):
        return self.temporal(self.spatial(x))


class GroupNorm(nn.Cell):
    """GroupNorm on channels-last clips, per frame or over the whole clip; statistics and affine as matmuls.

    Two-pass statistics (mean, then mean squared deviation) in float32, like PyTorch's group_norm.
    """

    def __init__(self, groups: int, channels: int, eps: float, per_frame: bool) -> None:
        super().__init__()
        self.weight = _param(np.ones((channels,), np.float32), "weight")
        self.bias = _param(np.zeros((channels,), np.float32), "bias")
        self.groups = groups
        self.eps = eps
        self.per_frame = per_frame

    def construct(self, x):
        b, t, h, w, c = x.shape
        n = b * t if self.per_frame else b
        rows = x.reshape(n, -1, c)
        length = rows.shape[1]
        g = self.groups
        cg = c // g
        ones_row = mint.ones((n, 1, length), dtype=x.dtype)
        ones_col = mint.ones((n, length, 1), dtype=x.dtype)
        count = float(length * cg)
        mean = mint.bmm(ones_row, rows).reshape(n, g, cg).sum(-1, keepdims=True) / count  # (n, g, 1)
        mean_c = ops.broadcast_to(mean, (n, g, cg)).reshape(n, 1, c)
        centered = rows - mint.bmm(ones_col, mean_c)
        var = mint.bmm(ones_row, centered * centered).reshape(n, g, cg).sum(-1, keepdims=True) / count
        scale = ops.broadcast_to(ops.rsqrt(var + self.eps), (n, g, cg)).reshape(n, c) * self.weight
        diag = ops.eye(c, c, x.dtype).reshape(1, c, c) * scale.reshape(n, 1, c)
        shift = ops.broadcast_to(self.bias.reshape(1, 1, c), (n, 1, c))
        y = mint.bmm(centered, diag) + mint.bmm(ones_col, shift)
        return y.reshape(b, t, h, w, c)


class ResnetBlock(nn.Cell):
    """GroupNorm, SiLU, conv, GroupNorm, SiLU, conv, plus a residual (a 1x1 conv when the width changes)."""

    def __init__(self, c_in: int, c_out: int, config: TAEConfig, init: _Init, backend: str) -> None:
        super().__init__()
        groups, eps, per_frame = config.norm_num_groups, config.norm_eps, config.norm_per_frame
        self.norm1 = GroupNorm(groups, c_in, eps, per_frame)
        self.conv1 = Conv2p5d(c_in, c_out, init, backend)
        self.norm2 = GroupNorm(groups, c_out, eps, per_frame)
        self.conv2 = Conv2p5d(c_out, c_out, init, backend)
        self.conv_shortcut = SpatialConv(c_in, c_out, 1, init, backend) if c_in != c_out else None

    def construct(self, x):
        h = self.conv1(mint.nn.functional.silu(self.norm1(x)))
        h = self.conv2(mint.nn.functional.silu(self.norm2(h)))
        shortcut = self.conv_shortcut(x) if self.conv_shortcut is not None else x
        return shortcut + h


class Linear(nn.Cell):
    """y = x @ W^T + b with PyTorch's (out, in) weight layout, on the last axis."""

    def __init__(self, c_in: int, c_out: int, init: _Init, zero: bool = False) -> None:
        super().__init__()
        if zero:
            self.weight = _param(np.zeros((c_out, c_in), np.float32), "weight")
            self.bias = _param(np.zeros((c_out,), np.float32), "bias")
        else:
            self.weight = _param(init.uniform((c_out, c_in), c_in), "weight")
            self.bias = _param(init.uniform((c_out,), c_in), "bias")

    def construct(self, x):
        return pointwise_rows(x, self.weight, self.bias)


def _attention(q, k, v, scale: float):
    """Single-head softmax attention over (N, S, C), chunked over N to bound the score matrix."""
    n, s, _ = q.shape
    if s == 1:  # one key: the softmax is 1 (this also avoids a wrong PyNative gradient, see tests)
        return v
    step = smaller(n, MAX_ATTENTION_ELEMENTS // (s * s))
    step = step if step > 0 else 1
    outs = []
    for start in range(0, n, step):
        end = smaller(n, start + step)
        scores = _BMM_TB(q[start:end], k[start:end]) * scale
        outs.append(mint.bmm(mint.nn.functional.softmax(scores, -1), v[start:end]))
    return outs[0] if len(outs) == 1 else mint.cat(outs, 0)


class Attention(nn.Cell):
    """Single-head self-attention with GroupNorm and a residual, over space (per frame) or time (per pixel).

    Names follow diffusers' VAE attention (group_norm, to_q, to_k, to_v, to_out.0). The temporal variant starts
    with a zero output projection, so it is an identity until trained.
    """

    def __init__(self, channels: int, config: TAEConfig, init: _Init, temporal: bool) -> None:
        super().__init__()
        self.group_norm = GroupNorm(config.norm_num_groups, channels, config.norm_eps, config.norm_per_frame)
        self.to_q = Linear(channels, channels, init)
        self.to_k = Linear(channels, channels, init)
        self.to_v = Linear(channels, channels, init)
        self.to_out = nn.CellList([Linear(channels, channels, init, zero=temporal)])
        self.temporal = temporal
        self.scale = 1.0 / math.sqrt(channels)

    def construct(self, x):
        b, t, h, w, c = x.shape
        y = self.group_norm(x)
        if self.temporal:
            y = ops.transpose(y.reshape(b, t, h * w, c), (0, 2, 1, 3)).reshape(b * h * w, t, c)
        else:
            y = y.reshape(b * t, h * w, c)
        y = _attention(self.to_q(y), self.to_k(y), self.to_v(y), self.scale)
        y = self.to_out[0](y)
        if self.temporal:
            y = ops.transpose(y.reshape(b, h * w, t, c), (0, 2, 1, 3))
        return x + y.reshape(b, t, h, w, c)


class MidBlock(nn.Cell):
    """ResnetBlock, spatial attention, temporal attention, ResnetBlock."""

    def __init__(self, channels: int, config: TAEConfig, init: _Init, backend: str) -> None:
        super().__init__()
        self.resnets = nn.CellList([ResnetBlock(channels, channels, config, init, backend) for _ in range(2)])
        self.add_attention = config.mid_block_add_attention
        if self.add_attention:
            self.attentions = nn.CellList([Attention(channels, config, init, temporal=False)])
            self.temporal_attentions = nn.CellList([Attention(channels, config, init, temporal=True)])

    def construct(self, x):
        x = self.resnets[0](x)
        if self.add_attention:
            x = self.temporal_attentions[0](self.attentions[0](x))
        return self.resnets[1](x)


class Resampler(nn.Cell):
    """Holds one conv as `.conv` (diffusers' `downsamplers.0.conv` / `upsamplers.0.conv` naming)."""

    def __init__(self, conv: nn.Cell) -> None:
        super().__init__()
        self.conv = conv

    def construct(self, x):
        return self.conv(x)


def upsample_space(x):
    """Nearest-neighbour x2 in H and W on (B, T, H, W, C) with two contiguous concatenations."""
    b, t, h, w, c = x.shape
    y = mint.cat([x.reshape(-1, c), x.reshape(-1, c)], -1).reshape(b * t * h, 2 * w * c)
    return mint.cat([y, y], -1).reshape(b, t, 2 * h, 2 * w, c)


def _same(x):
    return x


def _first(x, *_):
    return x


def upsample_time(x):
    """Nearest-neighbour x2 in T on (B, T, H, W, C)."""
    b, t, h, w, c = x.shape
    y = x.reshape(b, t, h * w * c)
    return mint.cat([y, y], -1).reshape(b, 2 * t, h, w, c)


class _Stage(nn.Cell):
    """A list of cells run in order, each optionally under recompute (gradient checkpointing)."""

    def __init__(self) -> None:
        super().__init__()
        self.gradient_checkpointing = False

    def _run(self, block: nn.Cell, x):
        if self.gradient_checkpointing and self.training:
            return ms.recompute(block, x)
        return block(x)


class DownBlock(_Stage):
    def __init__(
        self, c_in: int, c_out: int, config: TAEConfig, init: _Init, backend: str, level: int
    ) -> None:
        super().__init__()
        self.resnets = nn.CellList(
            [
                ResnetBlock(c_in if j == 0 else c_out, c_out, config, init, backend)
                for j in range(config.layers_per_block)
            ]
        )
        last = level == len(config.block_out_channels) - 1
        self.downsamplers = (
            None
            if last
            else nn.CellList([Resampler(SpatialConv(c_out, c_out, 3, init, backend, stride=2, bias=True))])
        )
        self.temporal_downsampler = (
            Resampler(TemporalConv(c_out, backend, stride=2))
            if level in config.temporal_downsample_levels
            else None
        )

    def construct(self, x):
        for block in self.resnets:
            x = self._run(block, x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        if self.temporal_downsampler is not None:
            x = self.temporal_downsampler(x)
        return x


class UpBlock(_Stage):
    def __init__(
        self, c_in: int, c_out: int, config: TAEConfig, init: _Init, backend: str, index: int
    ) -> None:
        super().__init__()
        self.resnets = nn.CellList(
            [
                ResnetBlock(c_in if j == 0 else c_out, c_out, config, init, backend)
                for j in range(config.layers_per_block + 1)
            ]
        )
        last = index == len(config.block_out_channels) - 1
        self.upsamplers = (
            None if last else nn.CellList([Resampler(SpatialConv(c_out, c_out, 3, init, backend))])
        )
        self.temporal_upsampler = (
            Resampler(TemporalConv(c_out, backend)) if index in config.temporal_upsample_levels else None
        )

    def construct(self, x):
        for block in self.resnets:
            x = self._run(block, x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](upsample_space(x))
        if self.temporal_upsampler is not None:
            # A single frame stays one frame: its nearest x2 copies would be identical, and every later layer
            # (per-frame convs, replicate-padded temporal convs, clip GroupNorm) keeps a constant clip constant.
            # `TemporalAutoencoder.decode_frames` repeats the decoded frame; images decode 8x cheaper.
            x = self.temporal_upsampler((upsample_time, _same)[_is_single_frame(x.shape[1])](x))
        return x


class Encoder(_Stage):
    """Pixels (B, T, H, W, C_in) channels-last -> moments (B, ceil(T/8), H/8, W/8, 2 * latent_channels)."""

    def __init__(self, config: TAEConfig, init: _Init, backend: str) -> None:
        super().__init__()
        ch = config.block_out_channels
        self.conv_in = Conv2p5d(config.in_channels, ch[0], init, backend)
        self.down_blocks = nn.CellList(
            [DownBlock(ch[max(i - 1, 0)], ch[i], config, init, backend, i) for i in range(len(ch))]
        )
        self.mid_block = MidBlock(ch[-1], config, init, backend)
        self.conv_norm_out = GroupNorm(config.norm_num_groups, ch[-1], config.norm_eps, config.norm_per_frame)
        self.conv_out = Conv2p5d(ch[-1], 2 * config.latent_channels, init, backend)
        self.shortcut = _shortcut(config)
        self.latent_channels = config.latent_channels

    def construct(self, x):
        pixels = x
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self._run(self.mid_block, x)
        moments = self.conv_out(mint.nn.functional.silu(self.conv_norm_out(x)))
        if self.shortcut is not None:
            c = self.latent_channels
            moments = mint.cat([moments[..., :c] + self.shortcut.encode(pixels), moments[..., c:]], -1)
        return moments


class Decoder(_Stage):
    """Latents (B, T', h, w, latent_channels) channels-last -> pixels (B, 8 T', 8 h, 8 w, C_out)."""

    def __init__(self, config: TAEConfig, init: _Init, backend: str) -> None:
        super().__init__()
        ch = tuple(reversed(config.block_out_channels))
        self.conv_in = Conv2p5d(config.latent_channels, ch[0], init, backend)
        self.mid_block = MidBlock(ch[0], config, init, backend)
        self.up_blocks = nn.CellList(
            [UpBlock(ch[max(i - 1, 0)], ch[i], config, init, backend, i) for i in range(len(ch))]
        )
        self.conv_norm_out = GroupNorm(config.norm_num_groups, ch[-1], config.norm_eps, config.norm_per_frame)
        self.conv_out = Conv2p5d(ch[-1], config.out_channels, init, backend)
        self.shortcut = _shortcut(config)

    def construct(self, z):
        x = self.conv_in(z)
        x = self._run(self.mid_block, x)
        for block in self.up_blocks:
            x = block(x)
        y = self.conv_out(mint.nn.functional.silu(self.conv_norm_out(x)))
        if self.shortcut is not None:
            y = y + self.shortcut.decode(z, y.shape[1] // z.shape[1])
        return y


def _shortcut(config: TAEConfig) -> PixelShortcut | None:
    if not config.pixel_shortcut:
        return None
    return PixelShortcut(
        config.in_channels,
        config.latent_channels,
        config.spatial_compression,
        config.temporal_compression,
        config.shortcut_time_parts,
    )


def iter_stages(cell: nn.Cell) -> Iterator[_Stage]:
    for _, sub in cell.cells_and_names():
        if isinstance(sub, _Stage):
            yield sub


class DiagonalGaussian:
    """The encoder's posterior N(mean, exp(logvar)) over latents (B, C, T', h, w); logvar clamped to [-30, 20]."""

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        self.mean = mean
        self.logvar = ops.clamp(logvar, -30.0, 20.0)
        self.std = ops.exp(0.5 * self.logvar)

    def sample(self, seed: int | np.random.Generator | None = None, noise: Tensor | None = None) -> Tensor:
        """mean + std * eps; eps from `noise`, else from a numpy generator (or int seed), else MindSpore's RNG."""
        if noise is None:
            if seed is None:
                noise = ops.standard_normal(tuple(self.mean.shape)).astype(self.mean.dtype)
            else:
                rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
                noise = Tensor(
                    rng.standard_normal(tuple(self.mean.shape)).astype(np.float32), self.mean.dtype
                )
        return self.mean + self.std * noise

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) summed over all latent elements of each sample: shape (B,)."""
        per = 0.5 * (self.mean * self.mean + ops.exp(self.logvar) - 1.0 - self.logvar)
        return per.reshape(per.shape[0], -1).sum(-1)


class TemporalAutoencoder(nn.Cell):
    """Movie Gen's TAE: video (B, C, T, H, W) in [-1, 1] <-> latents (B, C', ceil(T/8), H/8, W/8).

    `encode` returns the posterior, `decode(z, num_frames)` returns exactly `num_frames` frames (default 8 T').
    `construct(x, noise=None)` is the training forward: (reconstruction cropped to T, mean, logvar); it uses the
    posterior mean when `noise` is None and mean + std * noise otherwise. Tiling (`enable_tiling`) applies to
    `encode` / `decode` only.
    """

    def __init__(self, config: TAEConfig | None = None, seed: int | None = 0) -> None:
        super().__init__()
        self.config = config if config is not None else TAEConfig()
        self.backend = default_backend() if self.config.conv_backend == "auto" else self.config.conv_backend
        init = _Init(seed)
        self.encoder = Encoder(self.config, init, self.backend)
        self.decoder = Decoder(self.config, init, self.backend)
        self.tiling = None
        warn_if_slow_convolution(self.backend)

    # ----- shapes and validation -------------------------------------------------------------------------

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C', ceil(T / 8), H / 8, W / 8) of the latents of a clip; images (T = 1) give one latent frame."""
        s, t = self.config.spatial_compression, self.config.temporal_compression
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if height % s or width % s or height <= 0 or width <= 0:
            raise ValueError(f"height and width must be positive multiples of {s}, got {height}x{width}")
        return (self.config.latent_channels, -(-num_frames // t), height // s, width // s)

    def _check_pixels(self, x) -> None:
        if not isinstance(x, Tensor):
            raise ValueError(f"expected a mindspore Tensor of pixels (B, C, T, H, W), got {type(x).__name__}")
        if x.ndim != 5:
            raise ValueError(f"expected pixels of rank 5 (B, C, T, H, W), got shape {tuple(x.shape)}")
        if x.dtype not in (ms.float32, ms.float16, ms.bfloat16):
            raise ValueError(f"expected floating-point pixels in [-1, 1], got dtype {x.dtype}")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected {self.config.in_channels} channels at axis 1 of (B, C, T, H, W), got shape "
                f"{tuple(x.shape)}"
            )
        self.latent_shape(x.shape[2], x.shape[3], x.shape[4])

    def _check_latents(self, z) -> None:
        if not isinstance(z, Tensor):
            raise ValueError(
                f"expected a mindspore Tensor of latents (B, C, T, h, w), got {type(z).__name__}"
            )
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"expected latents (B, {self.config.latent_channels}, T, h, w), got shape {tuple(z.shape)}"
            )
        if z.dtype not in (ms.float32, ms.float16, ms.bfloat16):
            raise ValueError(f"expected floating-point latents, got dtype {z.dtype}")

    # ----- untiled core (jit-friendly) ------------------------------------------------------------------

    def encode_moments(self, x):
        """Pixels (B, C, T, H, W) -> moments (B, 2 C', ceil(T/8), H/8, W/8): mean then logvar on axis 1."""
        h = self.encoder(ops.transpose(x.astype(ms.float32), (0, 2, 3, 4, 1)))
        return ops.transpose(h, (0, 4, 1, 2, 3))

    def decode_frames(self, z, image: bool = False):
        """Latents (B, C', T', h, w) -> all 8 T' decoded frames (B, C, 8 T', 8 h, 8 w). `image`: z encodes one
        frame, whose decoded frame is wanted (no motion from a multi-part pixel shortcut)."""
        latents = ops.transpose(z.astype(ms.float32), (0, 2, 3, 4, 1))
        y = ops.transpose(self.decoder(latents), (0, 4, 1, 2, 3))
        single = _is_single_frame(z.shape[2])
        return (_first, (self._repeat_decoded_clip, self._repeat_decoded_frame)[_index(image)])[single](
            y, latents
        )

    def _repeat_decoded_frame(self, y, latents):
        # The decoder computes a single latent frame's clip once (see UpBlock); its 8 frames are equal.
        return ops.tile(y, (1, 1, self.config.temporal_compression, 1, 1))

    def _repeat_decoded_clip(self, y, latents):
        """A clip of one latent frame: the repeated frame plus the motion a multi-part pixel shortcut carries
        (its parts interpolated in time, minus their mean, which the decoder added)."""
        t = self.config.temporal_compression
        frames = self._repeat_decoded_frame(y, latents)
        shortcut = self.decoder.shortcut
        if shortcut is None or shortcut.time_parts == 1:
            return frames
        motion = shortcut.decode(latents, t) - shortcut.decode(latents, 1)
        return frames + ops.transpose(motion, (0, 4, 1, 2, 3))

    def construct(self, x, noise=None):
        moments = self.encode_moments(x)
        c = self.config.latent_channels
        mean, logvar = moments[:, :c], ops.clamp(moments[:, c:], -30.0, 20.0)
        z = mean if noise is None else mean + ops.exp(0.5 * logvar) * noise
        recon = self.decode_frames(z, x.shape[2] == 1)[:, :, : x.shape[2]]
        return recon, mean, logvar

    # ----- public API ------------------------------------------------------------------------------------

    def encode(self, x) -> DiagonalGaussian:
        """Posterior over latents of pixels x (B, C, T, H, W) in [-1, 1]; tiled when tiling is enabled. On CPU
        this switches MindSpore to synchronous op launch, the fast one here (`mg_tae.speed`)."""
        self._check_pixels(x)
        prefer_synchronous_launch()
        if self.tiling is not None:
            from mg_tae.tiling import tiled_encode

            moments = tiled_encode(self, x, self.tiling)
        else:
            moments = self.encode_moments(x)
        c = self.config.latent_channels
        return DiagonalGaussian(moments[:, :c], moments[:, c:])

    def decode(self, z, num_frames: int | None = None):
        """Pixels (B, C, N, 8 h, 8 w) of latents z (B, C', T', h, w); N = num_frames (default 8 T').

        num_frames must lie in (8 (T' - 1), 8 T'], the frame counts whose latent length is T'. Synchronous op
        launch on CPU, as `encode`.
        """
        self._check_latents(z)
        prefer_synchronous_launch()
        t_lat = z.shape[2]
        full = t_lat * self.config.temporal_compression
        if num_frames is None:
            num_frames = full
        lowest = (t_lat - 1) * self.config.temporal_compression + 1
        if not lowest <= num_frames <= full:
            raise ValueError(
                f"num_frames={num_frames} does not match {t_lat} latent frames: expected {lowest}..{full}"
            )
        if self.tiling is not None:
            from mg_tae.tiling import tiled_decode

            return tiled_decode(self, z, self.tiling, num_frames)
        return self.decode_frames(z, num_frames == 1)[:, :, :num_frames]

    def scale_latents(self, z):
        """Latents for diffusion: (z - shift_factor) * scaling_factor (SD3 convention)."""
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def unscale_latents(self, z):
        """Inverse of `scale_latents`: z / scaling_factor + shift_factor."""
        return z / self.config.scaling_factor + self.config.shift_factor

    def enable_tiling(
        self,
        tile_frames: int = 32,
        overlap_frames: int = 16,
        tile_size: int | None = 128,
        overlap_size: int = 32,
    ) -> None:
        """Encode/decode in overlapping tiles blended with linear ramps (bounded memory for long or large clips).

        Sizes are in pixels and must be multiples of 8: temporal tiles of `tile_frames` frames sharing
        `overlap_frames`, spatial tiles of `tile_size` pixels sharing `overlap_size` (None: no spatial tiling).
        The defaults bound the working memory on CPU to that of a 32-frame 128x128 tile: with the SD3.5 widths
        a 1x3x32x256x256 clip peaks at 7.4 GB (256-px tiles, the whole clip here, were killed at 24 GB).
        """
        from mg_tae.tiling import TilingConfig

        self.tiling = TilingConfig(tile_frames, overlap_frames, tile_size, overlap_size).checked(self.config)

    def disable_tiling(self) -> None:
        self.tiling = None

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each res block / mid block in the backward pass instead of storing its activations."""
        for stage in iter_stages(self):
            stage.gradient_checkpointing = bool(enabled)

    # ----- checkpoints -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        from mg_tae.checkpoint import state_dict

        return state_dict(self)

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True, source: str = "state dict"):
        from mg_tae.checkpoint import load_state_dict

        return load_state_dict(self, state, strict=strict, source=source)

    def save_pretrained(self, directory) -> None:
        from mg_tae.checkpoint import save_pretrained

        save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, strict: bool = True) -> TemporalAutoencoder:
        from mg_tae.checkpoint import from_pretrained

        return from_pretrained(cls, directory, strict=strict)
