"""Attention cores: the replaceable `core(q, k, v, mask)` callables that every attention layer owns.

All cores take q, k, v in BNSD layout `(batch, heads, seq, head_dim)` and an optional `mask` broadcastable to
`(batch, heads, seq_q, seq_k)` with 1 = attend, 0 = ignore; they return `(batch, heads, seq_q, head_dim)`
(docs/contracts.md section 5). Three implementations:

- `PlainAttention`: softmax(q k^T / sqrt(d)) v. Materialises the full score matrix; the reference.
- `ChunkedAttention`: online-softmax attention over query and key chunks with a recomputing backward, so neither
  the forward nor the backward ever holds more than one `chunk x chunk` block of scores per (batch, head).
  The CPU default.
- `FlashAttention`: MindSpore's fused `ops.flash_attention_score` (Ascend only; fp16/bf16 inside).

`make_attention_core(backend)` picks one; `"auto"` means flash on Ascend, chunked elsewhere.
"""

from __future__ import annotations

import math

import mindspore as ms
from mindspore import Tensor, mint, nn, ops

# Added to the scores of masked keys. Finite (not -inf) so a row whose keys are all masked gives a uniform
# average instead of NaN, identically in the plain and the chunked path.
MASKED_SCORE = -1.0e30

BACKENDS = ("auto", "chunked", "plain", "flash")

# Batched matmuls with transpose flags: on CPU in PyNative, `ops.BatchMatMul` is several times faster than
# `mint.matmul` on 4-D tensors, and the flags avoid materialising transposed views (slow strided copies).
_bmm = ops.BatchMatMul()
_bmm_nt = ops.BatchMatMul(transpose_b=True)  # a @ b^T
_bmm_tn = ops.BatchMatMul(transpose_a=True)  # a^T @ b


def mask_to_bias(mask: Tensor) -> Tensor:
    """Turn a 1 = attend / 0 = ignore mask (bool or numeric) into an additive float32 score bias."""
    return (1.0 - mask.astype(ms.float32)) * MASKED_SCORE


class PlainAttention(nn.Cell):
    """Scaled dot-product attention that materialises the `(B, heads, S_q, S_k)` score matrix."""

    def construct(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = _bmm_nt(q * scale, k)
        if mask is not None:
            scores = scores + mask_to_bias(mask)
        probs = mint.softmax(scores.astype(ms.float32), dim=-1).astype(v.dtype)
        return _bmm(probs, v)


def _split(x: Tensor, size: int, axis: int) -> tuple[Tensor, ...]:
    """Contiguous blocks of `size` along `axis` (the last may be shorter); one copy instead of a strided view
    per use, which matters in PyNative on CPU where every op on a view pays for a slow strided copy."""
    if x.shape[axis] <= size:
        return (x,)
    return tuple(part.contiguous() for part in mint.split(x, size, axis))


class _ChunkedAttentionFunction(nn.Cell):
    """Online-softmax attention with a hand-written, recomputing backward (FlashAttention-2's algorithm).

    Returns `(out, row_max, inv_sum)`: the attention output and, per query, the maximum of its scaled scores and
    the reciprocal of its softmax denominator, from which the backward rebuilds each block of probabilities
    instead of storing them (kept apart rather than as one log-sum-exp, so a row whose keys are all masked,
    with a maximum near MASKED_SCORE, keeps its exact normaliser). `bias` is an additive score bias broadcastable
    to `(B, heads, S_q, S_k)`, ignored when the cell was built with `has_bias=False`. The block loops run over
    static shapes, so the cell also compiles under `mindspore.jit` (unrolled).
    """

    def __init__(self, chunk_q: int, chunk_k: int, has_bias: bool):
        super().__init__()
        self.chunk_q = chunk_q
        self.chunk_k = chunk_k
        self.has_bias = has_bias

    def _bias_blocks(self, bias: Tensor, n_q: int, n_k: int):
        """bias split into a grid [query block][key block] (broadcast axes are not split)."""
        rows = _split(bias, self.chunk_q, 2) if bias.shape[2] > 1 else (bias,) * n_q
        grid = ()
        for row in rows:
            grid = (*grid, _split(row, self.chunk_k, 3) if row.shape[3] > 1 else (row,) * n_k)
        return grid

    def construct(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor):
        scale = 1.0 / math.sqrt(q.shape[-1])
        q_blocks = _split(q * scale, self.chunk_q, 2)
        k_blocks = _split(k, self.chunk_k, 2)
        v_blocks = _split(v, self.chunk_k, 2)
        n_q, n_k = len(q_blocks), len(k_blocks)
        biases = self._bias_blocks(bias, n_q, n_k) if self.has_bias else ()
        outs, maxes, inv_sums = (), (), ()
        for i in range(n_q):
            scores = _bmm_nt(q_blocks[i], k_blocks[0])
            if self.has_bias:
                scores = scores + biases[i][0]
            row_max = mint.amax(scores, -1, True)
            probs = mint.exp(scores - row_max)
            row_sum = mint.sum(probs, -1, True)
            acc = _bmm(probs, v_blocks[0])
            for j in range(1, n_k):
                scores = _bmm_nt(q_blocks[i], k_blocks[j])
                if self.has_bias:
                    scores = scores + biases[i][j]
                new_max = mint.maximum(row_max, mint.amax(scores, -1, True))
                correction = mint.exp(row_max - new_max)
                probs = mint.exp(scores - new_max)
                row_sum = row_sum * correction + mint.sum(probs, -1, True)
                acc = acc * correction + _bmm(probs, v_blocks[j])
                row_max = new_max
            inv_sum = mint.reciprocal(row_sum)
            outs, maxes, inv_sums = (*outs, acc * inv_sum), (*maxes, row_max), (*inv_sums, inv_sum)
        if n_q == 1:
            return outs[0], maxes[0], inv_sums[0]
        return mint.cat(outs, 2), mint.cat(maxes, 2), mint.cat(inv_sums, 2)

    def _block_grads(self, blocks, i: int, j: int):
        """Gradient pieces of query block i against key block j: (dq part, dk part, dv part)."""
        q_blocks, do_blocks, max_blocks, delta_blocks, k_blocks, v_blocks, biases = blocks
        scores = _bmm_nt(q_blocks[i], k_blocks[j])
        if self.has_bias:
            scores = scores + biases[i][j]
        probs = mint.exp(scores - max_blocks[i])
        dscores = probs * (_bmm_nt(do_blocks[i], v_blocks[j]) - delta_blocks[i])
        return _bmm(dscores, k_blocks[j]), _bmm_tn(dscores, q_blocks[i]), _bmm_tn(probs, do_blocks[i])

    def _key_block_grads(self, blocks, j: int):
        """dq pieces of every query block from key block j, and the full dk, dv of key block j."""
        dq, dk, dv = self._block_grads(blocks, 0, j)
        dq_parts = (dq,)
        for i in range(1, len(blocks[0])):
            dq, dk_part, dv_part = self._block_grads(blocks, i, j)
            dq_parts, dk, dv = (*dq_parts, dq), dk + dk_part, dv + dv_part
        return dq_parts, dk, dv

    def bprop(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, out, dout):
        # With e = exp(s - m) (unnormalised probabilities) and r = 1 / rowsum(e), p = e * r. Folding r into the
        # per-row quantities do' = do * r and delta' = rowsum(do * o) * r gives, blockwise,
        #   dv = e^T do',   ds = e * (do' v^T - delta'),   dq = ds k * scale,   dk = ds^T (q * scale).
        o, row_max, inv_sum = out
        do = dout[0]
        scale = 1.0 / math.sqrt(q.shape[-1])
        do_scaled = do * inv_sum
        delta = mint.sum(do * o, -1, True) * inv_sum
        q_blocks = _split(q * scale, self.chunk_q, 2)
        do_blocks = _split(do_scaled, self.chunk_q, 2)
        max_blocks = _split(row_max, self.chunk_q, 2)
        delta_blocks = _split(delta, self.chunk_q, 2)
        k_blocks = _split(k, self.chunk_k, 2)
        v_blocks = _split(v, self.chunk_k, 2)
        n_q, n_k = len(q_blocks), len(k_blocks)
        biases = self._bias_blocks(bias, n_q, n_k) if self.has_bias else ()
        blocks = (q_blocks, do_blocks, max_blocks, delta_blocks, k_blocks, v_blocks, biases)
        dq_blocks, dk, dv = self._key_block_grads(blocks, 0)
        dk_blocks, dv_blocks = (dk,), (dv,)
        for j in range(1, n_k):
            dq_parts, dk, dv = self._key_block_grads(blocks, j)
            dq_blocks = tuple(dq_blocks[i] + dq_parts[i] for i in range(n_q))
            dk_blocks, dv_blocks = (*dk_blocks, dk), (*dv_blocks, dv)
        dq = dq_blocks[0] if n_q == 1 else mint.cat(dq_blocks, 2)
        dk = dk_blocks[0] if n_k == 1 else mint.cat(dk_blocks, 2)
        dv = dv_blocks[0] if n_k == 1 else mint.cat(dv_blocks, 2)
        return dq * scale, dk, dv, ops.zeros_like(bias)


class ChunkedAttention(nn.Cell):
    """Memory-efficient attention: exact softmax attention computed block by block (online softmax).

    Peak extra memory is one `(B, heads, chunk_q, chunk_k)` score block instead of `(B, heads, S_q, S_k)`, in the
    forward and in the backward (which recomputes the blocks from the saved softmax statistics). Equal to
    `PlainAttention` up to float32 rounding; with sequences no longer than one chunk it is plain attention.
    """

    def __init__(self, chunk_size: int = 1024, chunk_size_k: int | None = None):
        super().__init__()
        if chunk_size < 1 or (chunk_size_k is not None and chunk_size_k < 1):
            raise ValueError(f"ChunkedAttention: chunk sizes must be >= 1, got {chunk_size}, {chunk_size_k}")
        chunk_k = chunk_size if chunk_size_k is None else chunk_size_k
        self.unmasked = _ChunkedAttentionFunction(chunk_size, chunk_k, has_bias=False)
        self.masked = _ChunkedAttentionFunction(chunk_size, chunk_k, has_bias=True)

    def construct(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            out, _, _ = self.unmasked(q, k, v, ops.zeros((1, 1, 1, 1), q.dtype))
        else:
            bias = mask_to_bias(mask).astype(q.dtype)
            while bias.ndim < 4:
                bias = bias.expand_dims(0)
            out, _, _ = self.masked(q, k, v, bias)
        return out


class FlashAttention(nn.Cell):
    """Ascend's fused attention kernel (`ops.flash_attention_score`, BNSD layout).

    The kernel takes fp16/bf16 only, so float32 inputs run in `compute_dtype` (bf16 by default) and the
    output is cast back. It has no CPU kernel: `make_attention_core("auto")` only picks it on Ascend.
    """

    def __init__(self, compute_dtype: ms.Type = ms.bfloat16):
        super().__init__()
        self.compute_dtype = compute_dtype

    def construct(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        batch, heads, seq_q, head_dim = q.shape
        seq_k = k.shape[2]
        dtype = q.dtype
        if dtype == ms.float32:
            q, k, v = q.astype(self.compute_dtype), k.astype(self.compute_dtype), v.astype(self.compute_dtype)
        discard = None
        if mask is not None:
            # The kernel's attn_mask has the opposite meaning: 1 = do not attend. Shape (B, 1, S_q, S_k).
            keep = mask.astype(ms.bool_)
            while keep.ndim < 4:
                keep = keep.expand_dims(0)
            shape = (batch, keep.shape[1], seq_q, seq_k)  # keep.shape[1] is 1 or heads
            discard = mint.logical_not(mint.broadcast_to(keep, shape)).astype(ms.uint8)
        out = ops.flash_attention_score(
            q,
            k,
            v,
            heads,
            attn_mask=discard,
            scalar_value=1.0 / math.sqrt(head_dim),
            input_layout="BNSD",
        )
        return out.astype(dtype)


def default_attention_backend() -> str:
    """The backend `"auto"` resolves to on the current device: `"flash"` on Ascend, `"chunked"` elsewhere."""
    return "flash" if ms.get_context("device_target") == "Ascend" else "chunked"


def make_attention_core(backend: str = "auto", chunk_size: int = 1024) -> nn.Cell:
    """Build an attention core: `"auto"`, `"chunked"`, `"plain"` or `"flash"` (Ascend only)."""
    if backend not in BACKENDS:
        raise ValueError(f"attention_backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = default_attention_backend()
    if backend == "flash":
        return FlashAttention()
    if backend == "plain":
        return PlainAttention()
    return ChunkedAttention(chunk_size)
