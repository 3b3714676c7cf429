"""Naive numpy references for the TAE's building blocks (channels-last), used by several test files."""

from __future__ import annotations

import numpy as np


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 1) -> np.ndarray:
    """x (N, H, W, C), w (O, C, k, k): stride 1 pads k//2 on all sides, stride 2 pads right/bottom by 1."""
    k = w.shape[2]
    if stride == 1:
        p = k // 2
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
        ho, wo = x.shape[1], x.shape[2]
    else:
        xp = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        ho, wo = (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[0]), np.float64)
    for a in range(k):
        for c in range(k):
            win = xp[:, a : a + stride * (ho - 1) + 1 : stride, c : c + stride * (wo - 1) + 1 : stride, :]
            out += win @ w[:, :, a, c].T.astype(np.float64)
    if b is not None:
        out += b
    return out


def temporal_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int = 1) -> np.ndarray:
    """x (B, T, H, W, C), w (O, C, 3): replicate pad 1 frame each side, then a valid conv with the stride."""
    xp = np.concatenate([x[:, :1], x, x[:, -1:]], 1)
    t_out = (xp.shape[1] - 3) // stride + 1
    out = np.zeros((*x.shape[:1], t_out, *x.shape[2:4], w.shape[0]), np.float64)
    for t in range(t_out):
        for k in range(3):
            out[:, t] += xp[:, stride * t + k] @ w[:, :, k].T.astype(np.float64)
    if b is not None:
        out += b
    return out
