"""mg-tae test fixtures: random videos, perturbed temporal layers and naive numpy convolutions, shared as fixtures
(so that no test module imports another). The model checks themselves come from mg-testing.

PyNative runs synchronously here: on an oversubscribed 2-core machine MindSpore's asynchronous op pipeline made
the tiny TAE's forward pass ~15x slower (12 s vs 0.7 s); results are identical either way.
"""

from __future__ import annotations

from types import SimpleNamespace

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

ms.set_context(pynative_synchronize=True)


def random_video(shape, seed=0) -> Tensor:
    """Uniform [-1, 1] float32 values of `shape` (pixels or latents), the same for the same seed."""
    return Tensor(np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32))


def perturb_temporal_layers(model, scale=0.1, seed=1) -> None:
    """Add Gaussian noise to every temporal parameter, so the TAE is no longer frame-wise (its initial state)."""
    rng = np.random.default_rng(seed)
    for name, p in model.parameters_and_names():
        if ".temporal." in name or "temporal_" in name:
            value = p.asnumpy()
            p.set_data(Tensor((value + scale * rng.standard_normal(value.shape)).astype(np.float32)))


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


@pytest.fixture(scope="session")
def video():
    """`video(shape, seed=0)`: a random float32 tensor in [-1, 1]."""
    return random_video


@pytest.fixture(scope="session")
def perturb_temporal():
    """`perturb_temporal(model, scale=0.1, seed=1)`: noise on the temporal parameters, in place."""
    return perturb_temporal_layers


@pytest.fixture(scope="session")
def numpy_conv():
    """Naive numpy references of the TAE's convolutions, channels-last: `.conv2d(x, w, b, stride=1)` and
    `.temporal_conv(x, w, b, stride=1)`."""
    return SimpleNamespace(conv2d=conv2d, temporal_conv=temporal_conv)
