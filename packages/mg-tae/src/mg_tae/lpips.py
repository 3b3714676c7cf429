"""LPIPS perceptual distance (VGG16 variant) with weights loaded from a user-supplied safetensors file.

Architecture (Zhang et al. 2018, "lpips" v0.1, net="vgg"): inputs in [-1, 1] are shifted and scaled by fixed
ImageNet-derived constants, run through VGG16's 13 conv layers (ReLU, 2x2 max pooling between stages), and
compared at relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3: each feature is unit-normalised over channels, the
squared difference goes through a per-tap 1x1 "lin" conv without bias, is averaged over space, and the five taps
are summed. Weights cannot be downloaded here, so the file is the user's (see the README for the conversion);
`LPIPS.random(seed)` builds the same network with random weights for tests.

Safetensors keys: `features.{i}.weight` / `features.{i}.bias` with torchvision's VGG16 feature indices
(0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28; weights (C_out, C_in, 3, 3)) and `lin{k}.weight`
(shape (1, C_k, 1, 1)) for k = 0..4, as in the lpips package's `lin{k}.model.1.weight`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, mint, nn, ops
from safetensors.numpy import load_file

from mg_tae.conv import conv3x3_native, conv3x3_rows, default_backend

# (feature index, in channels, out channels) of VGG16's conv layers; a None entry is a 2x2 max pooling.
VGG16_LAYERS = (
    (0, 3, 64), (2, 64, 64), "tap",
    None, (5, 64, 128), (7, 128, 128), "tap",
    None, (10, 128, 256), (12, 256, 256), (14, 256, 256), "tap",
    None, (17, 256, 512), (19, 512, 512), (21, 512, 512), "tap",
    None, (24, 512, 512), (26, 512, 512), (28, 512, 512), "tap",
)  # fmt: skip
TAP_CHANNELS = (64, 128, 256, 512, 512)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Every key the LPIPS weights file must hold, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in VGG16_LAYERS:
        if isinstance(layer, tuple):
            i, c_in, c_out = layer
            shapes[f"features.{i}.weight"] = (c_out, c_in, 3, 3)
            shapes[f"features.{i}.bias"] = (c_out,)
    for k, c in enumerate(TAP_CHANNELS):
        shapes[f"lin{k}.weight"] = (1, c, 1, 1)
    return shapes


def _max_pool2(x):
    """2x2 max pooling, stride 2, on channels-last (N, H, W, C); an odd last row/column is dropped (floor)."""
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    x = x[:, : 2 * h2, : 2 * w2]
    rows = x.reshape(n, h2, 2, 2 * w2 * c)
    y = ops.maximum(rows[:, :, 0], rows[:, :, 1]).reshape(n * h2 * w2, 2 * c)
    return ops.maximum(y[:, :c], y[:, c:]).reshape(n, h2, w2, c)


class LPIPS(nn.Cell):
    """Perceptual distance between images (N, 3, H, W) or videos (B, 3, T, H, W) in [-1, 1].

    Returns one value per image (per frame for videos, shape (B, T)); weights are frozen (requires_grad=False)
    but gradients flow to the inputs, so it can serve as a training loss.
    """

    def __init__(self, weights: dict[str, np.ndarray], backend: str | None = None) -> None:
        super().__init__()
        shapes = expected_shapes()
        missing = sorted(set(shapes) - set(weights))
        wrong = sorted(k for k in shapes if k in weights and tuple(np.shape(weights[k])) != shapes[k])
        if missing or wrong:
            raise ValueError(
                "LPIPS weights: "
                + (f"missing keys {missing}" if missing else "")
                + ("; " if missing and wrong else "")
                + (
                    f"wrong shapes {[(k, tuple(np.shape(weights[k])), shapes[k]) for k in wrong]}"
                    if wrong
                    else ""
                )
            )
        self.backend = backend or default_backend()
        self.names = sorted(shapes)
        self.weights = ParameterTuple(
            [
                Parameter(
                    Tensor(np.asarray(weights[k], np.float32)), name=k.replace(".", "_"), requires_grad=False
                )
                for k in self.names
            ]
        )
        self.index = {k: i for i, k in enumerate(self.names)}
        self.shift = Tensor(np.array(SHIFT, np.float32))
        self.scale = Tensor(np.array(SCALE, np.float32))

    @classmethod
    def from_safetensors(cls, path: str | Path, backend: str | None = None) -> LPIPS:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no LPIPS weights file (see mg-tae's README for the conversion)")
        try:
            weights = load_file(str(path))
        except Exception as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
        try:
            return cls(weights, backend)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err

    @classmethod
    def random(cls, seed: int = 0, backend: str | None = None) -> LPIPS:
        """The LPIPS network with random (He-initialised) conv weights and positive lin weights, for tests."""
        rng = np.random.default_rng(seed)
        weights = {}
        for key, shape in expected_shapes().items():
            if key.startswith("lin"):
                weights[key] = rng.uniform(0.0, 1.0, shape).astype(np.float32)
            elif key.endswith("bias"):
                weights[key] = (0.01 * rng.standard_normal(shape)).astype(np.float32)
            else:
                fan_in = shape[1] * 9
                weights[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        return cls(weights, backend)

    def _w(self, key: str):
        return self.weights[self.index[key]]

    def _features(self, x):
        """The five tap activations of channels-last images (N, H, W, 3)."""
        taps = []
        for layer in VGG16_LAYERS:
            if layer is None:
                x = _max_pool2(x)
            elif layer == "tap":
                taps.append(x)
            else:
                i = layer[0]
                w, b = self._w(f"features.{i}.weight"), self._w(f"features.{i}.bias")
                x = conv3x3_native(x, w, b) if self.backend == "native" else conv3x3_rows(x, w, b)
                x = ops.relu(x)
        return taps

    def construct(self, pred, target):
        video = pred.ndim == 5
        if pred.shape != target.shape:
            raise ValueError(f"LPIPS: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
        if video:
            b, c, t, h, w = pred.shape
            pred = ops.transpose(pred, (0, 2, 3, 4, 1)).reshape(b * t, h, w, c)
            target = ops.transpose(target, (0, 2, 3, 4, 1)).reshape(b * t, h, w, c)
        else:
            pred = ops.transpose(pred, (0, 2, 3, 1))
            target = ops.transpose(target, (0, 2, 3, 1))
        n = pred.shape[0]
        both = mint.cat([pred, target], 0)
        both = (both - self.shift) / self.scale
        total = None
        for k, feat in enumerate(self._features(both)):
            f0, f1 = feat[:n], feat[n:]
            f0 = f0 / (ops.sqrt((f0 * f0).sum(-1, keepdims=True)) + 1e-10)
            f1 = f1 / (ops.sqrt((f1 * f1).sum(-1, keepdims=True)) + 1e-10)
            diff = (f0 - f1) ** 2
            lin = self._w(f"lin{k}.weight").reshape(-1, 1)
            score = mint.matmul(diff.reshape(-1, diff.shape[-1]), lin).reshape(n, -1).mean(-1)
            total = score if total is None else total + score
        return total.reshape(b, t) if video else total
