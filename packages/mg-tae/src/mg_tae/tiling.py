"""Tiled encode and decode: overlapping tiles in T, H and W, blended with linear ramps in float32.

A tile is encoded/decoded on its own, so the working memory is that of one tile whatever the clip length; only
the float32 output accumulator grows with the clip. In an overlap the two tiles' weights ramp linearly and sum
to one, so there are no seams, only a smooth cross-fade (the reference implementation averages uniformly).
Tile starts are multiples of 8 pixels (one latent step), so every tile is aligned with the latent grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mindspore import Tensor

from mg_tae.config import TAEConfig


@dataclass(frozen=True)
class TilingConfig:
    """Tile and overlap sizes in pixels (multiples of the compression factors); tile_size None: no spatial tiles."""

    tile_frames: int = 32
    overlap_frames: int = 16
    tile_size: int | None = 128
    overlap_size: int = 32

    def checked(self, config: TAEConfig) -> TilingConfig:
        t, s = config.temporal_compression, config.spatial_compression
        if self.tile_frames <= 0 or self.tile_frames % t:
            raise ValueError(f"tile_frames must be a positive multiple of {t}, got {self.tile_frames}")
        if self.overlap_frames < 0 or self.overlap_frames % t or self.overlap_frames >= self.tile_frames:
            raise ValueError(
                f"overlap_frames must be a multiple of {t} in [0, tile_frames={self.tile_frames}), "
                f"got {self.overlap_frames}"
            )
        if self.tile_size is not None:
            if self.tile_size <= 0 or self.tile_size % s:
                raise ValueError(
                    f"tile_size must be a positive multiple of {s} or None, got {self.tile_size}"
                )
            if self.overlap_size < 0 or self.overlap_size % s or self.overlap_size >= self.tile_size:
                raise ValueError(
                    f"overlap_size must be a multiple of {s} in [0, tile_size={self.tile_size}), "
                    f"got {self.overlap_size}"
                )
        return self


def windows(length: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """Start/end of tiles of `tile` steps every `stride` steps covering [0, length) (the last may be shorter)."""
    if length <= tile:
        return [(0, length)]
    spans = []
    start = 0
    while True:
        spans.append((start, min(start + tile, length)))
        if start + tile >= length:
            return spans
        start += stride


def ramp(length: int, left: int, right: int) -> np.ndarray:
    """Weights of one tile: linear ramps over its `left` / `right` overlaps, 1 elsewhere (neighbours sum to 1)."""
    i = np.arange(length, dtype=np.float64)
    w = np.ones(length)
    if left > 0:
        w = np.minimum(w, (i + 1) / (left + 1))
    if right > 0:
        w = np.minimum(w, (length - i) / (right + 1))
    return w


def _axis_plan(spans_in: list[tuple[int, int]], scale_out, out_length: int):
    """Per tile: input span, output span (scaled), and the tile's ramp over its output overlaps."""
    outs = [(scale_out(a, b)) for a, b in spans_in]
    outs = [(a, min(b, out_length)) for a, b in outs]
    plan = []
    for k, (span_in, (a, b)) in enumerate(zip(spans_in, outs, strict=True)):
        left = outs[k - 1][1] - a if k > 0 else 0
        right = b - outs[k + 1][0] if k + 1 < len(outs) else 0
        plan.append((span_in, (a, b), ramp(b - a, max(left, 0), max(right, 0))))
    return plan


def _blend(run_tile, x: np.ndarray | Tensor, plans, out_shape: tuple[int, ...]) -> np.ndarray:
    """Run `run_tile` on every (T, H, W) tile of x (B, C, T, H, W) and blend the results into out_shape."""
    acc = np.zeros(out_shape, np.float32)
    weight = np.zeros(out_shape[2:], np.float32)
    plan_t, plan_h, plan_w = plans
    for ti, to, wt in plan_t:
        for hi, ho, wh in plan_h:
            for wi, wo, ww in plan_w:
                tile = x[:, :, ti[0] : ti[1], hi[0] : hi[1], wi[0] : wi[1]]
                out = run_tile(tile)
                out = out[:, :, : to[1] - to[0], : ho[1] - ho[0], : wo[1] - wo[0]]
                w = (wt[:, None, None] * wh[None, :, None] * ww[None, None, :]).astype(np.float32)
                acc[:, :, to[0] : to[1], ho[0] : ho[1], wo[0] : wo[1]] += out * w
                weight[to[0] : to[1], ho[0] : ho[1], wo[0] : wo[1]] += w
    return acc / weight


def tiled_encode(model, x: Tensor, tiling: TilingConfig) -> Tensor:
    """Moments (B, 2C', ceil(T/8), H/8, W/8) of x (B, C, T, H, W) encoded tile by tile."""
    cfg = model.config
    tc, sc = cfg.temporal_compression, cfg.spatial_compression
    b, _, t, h, w = x.shape
    c_lat, t_lat, h_lat, w_lat = model.latent_shape(t, h, w)
    plan_t = _axis_plan(
        windows(t, tiling.tile_frames, tiling.tile_frames - tiling.overlap_frames),
        lambda a, e: (a // tc, -(-e // tc)),
        t_lat,
    )
    plans_hw = []
    for length, out_len in ((h, h_lat), (w, w_lat)):
        tile = tiling.tile_size or length
        stride = tile - tiling.overlap_size if tiling.tile_size else length
        plans_hw.append(_axis_plan(windows(length, tile, stride), lambda a, e: (a // sc, e // sc), out_len))

    def run(tile):
        return model.encode_moments(tile).asnumpy()

    moments = _blend(run, x, (plan_t, *plans_hw), (b, 2 * c_lat, t_lat, h_lat, w_lat))
    return Tensor(moments)


def tiled_decode(model, z: Tensor, tiling: TilingConfig, num_frames: int) -> Tensor:
    """Pixels (B, C, num_frames, 8h, 8w) of latents z (B, C', T', h, w) decoded tile by tile."""
    cfg = model.config
    tc, sc = cfg.temporal_compression, cfg.spatial_compression
    b, _, t_lat, h_lat, w_lat = z.shape
    lt, lo = tiling.tile_frames // tc, tiling.overlap_frames // tc
    plan_t = _axis_plan(windows(t_lat, lt, lt - lo), lambda a, e: (a * tc, e * tc), num_frames)
    plans_hw = []
    for length in (h_lat, w_lat):
        if tiling.tile_size:
            tile, overlap = tiling.tile_size // sc, tiling.overlap_size // sc
            spans = windows(length, tile, tile - overlap)
        else:
            spans = [(0, length)]
        plans_hw.append(_axis_plan(spans, lambda a, e: (a * sc, e * sc), length * sc))

    def run(tile):
        return model.decode_frames(tile, num_frames == 1).asnumpy()

    shape = (b, cfg.out_channels, num_frames, h_lat * sc, w_lat * sc)
    return Tensor(_blend(run, z, (plan_t, *plans_hw), shape))
