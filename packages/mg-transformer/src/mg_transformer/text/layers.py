"""Small MindSpore layers shared by the text encoders, built only from ops that have CPU kernels in PyNative mode.

`mint.nn.Embedding`, `mint.nn.LayerNorm`, `ops.rms_norm` and `mint.nn.GELU` have no CPU kernel in MindSpore 2.10,
so the lookup uses `ops.gather`, the norms are written out and GELU comes from `nn.GELU`.
"""

from __future__ import annotations

import mindspore as ms
from mindspore import Parameter, nn, ops

# Additive attention bias for masked keys: large enough to zero a softmax weight, small enough to stay finite
# when position biases are added to it.
MASK_BIAS = -1e9


class Embedding(nn.Cell):
    """A lookup table `weight` of shape (num_embeddings, dim), indexed with `ops.gather`."""

    def __init__(self, num_embeddings: int, dim: int, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        self.weight = Parameter(ops.zeros((num_embeddings, dim), dtype), name="weight")

    def construct(self, ids: ms.Tensor) -> ms.Tensor:
        return ops.gather(self.weight, ids, 0)


class RMSNorm(nn.Cell):
    """T5's layer norm: scale by the root mean square (computed in float32), no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        self.eps = eps
        self.weight = Parameter(ops.ones((dim,), dtype), name="weight")

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        x32 = x if x.dtype == ms.float32 else x.astype(ms.float32)
        normed = x32 * ops.rsqrt((x32 * x32).mean(-1, keep_dims=True) + self.eps)
        return self.weight * (normed if x.dtype == ms.float32 else normed.astype(x.dtype))


class LayerNorm(nn.Cell):
    """Layer norm over the last axis with parameters named `weight` / `bias` (as in Hugging Face checkpoints)."""

    def __init__(self, dim: int, eps: float, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        self.weight = Parameter(ops.ones((dim,), dtype), name="weight")
        self.bias = Parameter(ops.zeros((dim,), dtype), name="bias")
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.norm(x, self.weight, self.bias)[0]


class QuickGELU(nn.Cell):
    """x * sigmoid(1.702 x), the activation of OpenAI's CLIP."""

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return x * ops.sigmoid(1.702 * x)


# Hugging Face activation names (config `hidden_act` / `dense_act_fn`) -> cell factory.
_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": lambda: nn.GELU(approximate=False),
    "gelu_new": lambda: nn.GELU(approximate=True),
    "gelu_pytorch_tanh": lambda: nn.GELU(approximate=True),
    "gelu_fast": lambda: nn.GELU(approximate=True),
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "quick_gelu": QuickGELU,
}


def activation(name: str) -> nn.Cell:
    """The activation cell for a Hugging Face activation name; raises ValueError for unknown names."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; expected one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def supported_activations() -> list[str]:
    """Activation names `activation` accepts."""
    return sorted(_ACTIVATIONS)


def attention(q: ms.Tensor, k: ms.Tensor, v: ms.Tensor, bias: ms.Tensor | None) -> ms.Tensor:
    """softmax(q k^T + bias) v over BNSD tensors; the caller folds any scaling into q.

    The bias (float32, with `MASK_BIAS` at blocked keys) is added and the softmax taken in float32, so half
    precision weights neither overflow the mask nor lose the position bias.
    """
    scores = ops.matmul(q, k.swapaxes(-1, -2))
    if scores.dtype != ms.float32:
        scores = scores.astype(ms.float32)
    if bias is not None:
        scores = scores + bias
    probs = ops.softmax(scores, -1)
    if probs.dtype != v.dtype:
        probs = probs.astype(v.dtype)
    return ops.matmul(probs, v)
