"""Reconstruction metrics for video: PSNR and SSIM, per frame, averaged over all frames.

Conventions (publish them with every number): inputs are (B, C, T, H, W) or (C, T, H, W) arrays or tensors in
[-1, 1]; values are clipped to [-1, 1] and mapped to [0, 1] by (x + 1) / 2; each frame (one (b, t) pair, all
channels) is scored on its own with data range 1.0 (identical to scoring 8-bit frames in [0, 255] with data
range 255; SSIM depends on this offset, PSNR does not); the result is the mean over all frames of all clips. With `quantize=True` frames are first rounded to 8-bit levels, as the
reference implementation's evaluation does (uint8 via (x + 1) * 127.5). SSIM is scikit-image's default:
a 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance, per channel, averaged over channels and over
the positions whose window lies inside the frame.
"""

from __future__ import annotations

import numpy as np

DATA_RANGE = 1.0


def _frames(x, quantize: bool) -> np.ndarray:
    """(N, C, H, W) float64 frames from a (B, C, T, H, W) or (C, T, H, W) array or tensor."""
    a = x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x)
    if a.ndim == 4:
        a = a[None]
    if a.ndim != 5:
        raise ValueError(f"expected video of shape (B, C, T, H, W) or (C, T, H, W), got {a.shape}")
    a = (np.clip(a.astype(np.float64), -1.0, 1.0) + 1.0) / 2.0
    if quantize:
        a = np.round(a * 255.0) / 255.0
    b, c, t, h, w = a.shape
    return a.transpose(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _pair(pred, target, quantize: bool) -> tuple[np.ndarray, np.ndarray]:
    p, g = _frames(pred, quantize), _frames(target, quantize)
    if p.shape != g.shape:
        raise ValueError(f"prediction and target shapes differ: {p.shape} vs {g.shape} (as frames)")
    return p, g


def psnr_per_frame(pred, target, quantize: bool = False) -> np.ndarray:
    p, g = _pair(pred, target, quantize)
    mse = ((p - g) ** 2).reshape(len(p), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(DATA_RANGE**2 / mse)


def psnr(pred, target, quantize: bool = False) -> float:
    """Mean over frames of the per-frame PSNR in dB (inf when a frame is reproduced exactly)."""
    return float(psnr_per_frame(pred, target, quantize).mean())


def _box_mean(a: np.ndarray, win: int) -> np.ndarray:
    """Mean over every full win x win window of the last two axes (valid positions only), via integral images."""
    s = np.cumsum(np.cumsum(a, -2), -1)
    s = np.pad(s, [(0, 0)] * (a.ndim - 2) + [(1, 0), (1, 0)])
    total = s[..., win:, win:] - s[..., :-win, win:] - s[..., win:, :-win] + s[..., :-win, :-win]
    return total / (win * win)


def ssim_per_frame(pred, target, quantize: bool = False, win_size: int = 7) -> np.ndarray:
    p, g = _pair(pred, target, quantize)
    if min(p.shape[-2:]) < win_size:
        raise ValueError(f"frames of {p.shape[-2:]} are smaller than the SSIM window {win_size}")
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    n = win_size * win_size
    cov_norm = n / (n - 1)
    ux, uy = _box_mean(p, win_size), _box_mean(g, win_size)
    vx = cov_norm * (_box_mean(p * p, win_size) - ux * ux)
    vy = cov_norm * (_box_mean(g * g, win_size) - uy * uy)
    vxy = cov_norm * (_box_mean(p * g, win_size) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(len(p), -1).mean(1)


def ssim(pred, target, quantize: bool = False) -> float:
    """Mean over frames of the per-frame SSIM (scikit-image's default settings, channels averaged)."""
    return float(ssim_per_frame(pred, target, quantize).mean())


# ---------------------------------------------------------------------------------------------------------------
# Motion: does the reconstruction move when the input does, or stand still for a latent frame and then jump?


def frame_changes(video) -> np.ndarray:
    """(B, T-1) mean absolute difference between consecutive frames (all channels, on the [0, 1] scale)."""
    a = video.asnumpy() if hasattr(video, "asnumpy") else np.asarray(video)
    frames = _frames(a, quantize=False)
    b, t = (1, a.shape[1]) if a.ndim == 4 else (a.shape[0], a.shape[2])
    frames = frames.reshape(b, t, -1)
    return np.abs(np.diff(frames, axis=1)).mean(-1)


def largest_step_share(video, min_change: float = 1e-4) -> np.ndarray:
    """(B,) share of all frame-to-frame change carried by the largest single step, per clip: a flow-free motion
    proxy. Smooth motion over T frames spreads the change (about 1 / (T - 1)); a decoder that repeats each latent
    frame's content over its 8 frames puts all of it into the steps between latent frames (1.0 for two latent
    frames). NaN for a clip whose mean change per step is below `min_change` (nothing moves)."""
    changes = frame_changes(video)
    total = changes.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = changes.max(-1, initial=0.0) / total
    return np.where(total / max(changes.shape[-1], 1) >= min_change, share, np.nan)


def by_position(per_frame: np.ndarray, frames_per_clip: int, group: int = 8) -> np.ndarray:
    """(group,) mean of per-frame scores (clips' frames concatenated) by position within a latent frame
    (t mod group): "static then jump" shows as high scores at one position and low ones at the others."""
    scores = np.asarray(per_frame, np.float64).reshape(-1, frames_per_clip)
    positions = np.arange(frames_per_clip) % group
    return np.array(
        [scores[:, positions == p].mean() if (positions == p).any() else np.nan for p in range(group)]
    )
