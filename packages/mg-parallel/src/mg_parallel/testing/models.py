"""Small models with the same seams as the Movie Gen transformer (docs/contracts.md section 5), for testing
parallel plans before applying them to a large model (mg-parallel's own tests use them).

- every attention layer owns a replaceable `core(q, k, v, mask)` in BNSD layout;
- linear layers are plain `mint.nn.Linear` / `nn.Dense` sub-cells at stable paths;
- tokens run through `blocks` (a CellList) as `(B, S, hidden)`; position embeddings are added once before
  `blocks[0]`; cross-attention reads replicated text tokens.
"""

from __future__ import annotations

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, mint, nn, ops


class SDPA(nn.Cell):
    """Plain attention core: softmax(q k^T / sqrt(d) + mask bias) v, mask 1 = attend."""

    def construct(self, q, k, v, mask=None):
        scores = mint.matmul(q, ops.swapaxes(k, -1, -2)) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores + (1.0 - mask.astype(scores.dtype)) * -1e9
        return mint.matmul(ops.softmax(scores, -1), v)


class RMSNorm(nn.Cell):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = Parameter(ms.Tensor(np.ones(dim, np.float32)), name="weight")
        self.eps = eps

    def construct(self, x):
        return x * ops.rsqrt(ops.mean(ops.square(x), -1, keep_dims=True) + self.eps) * self.weight


class Attention(nn.Cell):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        kv_dim = kv_dim or dim
        self.to_q = mint.nn.Linear(dim, dim, bias=False)
        self.to_k = mint.nn.Linear(kv_dim, dim, bias=False)
        self.to_v = mint.nn.Linear(kv_dim, dim)
        self.to_out = mint.nn.Linear(dim, dim)
        self.core = SDPA()

    def _split(self, t):
        b, s, _ = t.shape
        return ops.transpose(ops.reshape(t, (b, s, -1, self.head_dim)), (0, 2, 1, 3))

    def construct(self, x, context=None, mask=None):
        kv = x if context is None else context
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(kv)), self._split(self.to_v(kv))
        out = self.core(q, k, v, mask)
        b, _, s, _ = out.shape
        return self.to_out(ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (b, s, -1)))


class MLP(nn.Cell):
    """SwiGLU MLP: w2(silu(w1 x) * w3 x); w3 is an nn.Dense to cover both linear types."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = mint.nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Dense(dim, hidden)
        self.w2 = mint.nn.Linear(hidden, dim)

    def construct(self, x):
        return self.w2(ops.silu(self.w1(x)) * self.w3(x))


class Block(nn.Cell):
    def __init__(self, dim: int, heads: int, text_dim: int | None, mlp_hidden: int):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = Attention(dim, heads)
        self.cross = Attention(dim, heads, kv_dim=text_dim) if text_dim else None
        self.norm2 = nn.LayerNorm((dim,))
        self.mlp = MLP(dim, mlp_hidden)

    def construct(self, x, text=None, text_mask=None, mask=None):
        x = x + self.attn(self.norm1(x), mask=mask)
        if self.cross is not None:
            x = x + self.cross(x, context=text, mask=text_mask)
        return x + self.mlp(self.norm2(x))


class ToyTransformer(nn.Cell):
    """in_proj -> + pos_emb -> blocks -> norm -> out_proj, on tokens (B, S, in_dim)."""

    def __init__(
        self,
        in_dim: int = 6,
        dim: int = 16,
        heads: int = 4,
        depth: int = 2,
        seq: int = 8,
        text_dim: int | None = 5,
        mlp_hidden: int = 24,
    ):
        super().__init__()
        self.in_proj = mint.nn.Linear(in_dim, dim)
        self.pos_emb = Parameter(
            ms.Tensor(np.random.default_rng(1).normal(size=(1, seq, dim)).astype(np.float32) * 0.1)
        )
        self.blocks = nn.CellList([Block(dim, heads, text_dim, mlp_hidden) for _ in range(depth)])
        self.norm = RMSNorm(dim)
        self.out_proj = mint.nn.Linear(dim, in_dim)

    def construct(self, x, text=None, text_mask=None, mask=None):
        x = self.in_proj(x) + self.pos_emb
        for block in self.blocks:
            x = block(x, text, text_mask, mask)
        return self.out_proj(self.norm(x))


class MLPStack(nn.Cell):
    """blocks of (LayerNorm -> MLP) with residuals, for tensor-parallel (and Megatron-SP) tests."""

    def __init__(self, dim: int = 8, hidden: int = 12, depth: int = 2):
        super().__init__()
        self.blocks = nn.CellList([_MLPBlock(dim, hidden) for _ in range(depth)])
        self.head = mint.nn.Linear(dim, dim)

    def construct(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class _MLPBlock(nn.Cell):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.mlp = MLP(dim, hidden)

    def construct(self, x):
        return x + self.mlp(self.norm(x))


def build(cls, seed: int = 0, **kwargs):
    """Build a model with deterministic weights (the same on every rank and in the reference)."""
    ms.set_seed(seed)
    model = cls(**kwargs)
    rng = np.random.default_rng(seed + 100)
    for p in model.get_parameters():  # non-trivial values everywhere (norm weights, biases included)
        value = rng.normal(scale=0.3, size=p.shape).astype(np.float32)
        if (p.name.endswith("weight") and len(p.shape) == 1) or "gamma" in p.name:
            value = 1.0 + value * 0.3
        p.set_data(ms.Tensor(value))
    return model
