"""Attention cores: the replaceable `core(q, k, v, mask)` callables that every attention layer owns.

All cores take q, k, v in BNSD layout `(batch, heads, seq, head_dim)` and an optional `mask` broadcastable to
`(batch, heads, seq_q, seq_k)` with 1 = attend, 0 = ignore; they return `(batch, heads, seq_q, head_dim)`
(docs/contracts.md section 5). Three implementations:

- `PlainAttention`: softmax(q k^T / sqrt(d)) v. Materialises the full score matrix; the reference.
- `ChunkedAttention`: exact attention over query and key blocks (online softmax) with a recomputing backward, so
  neither the forward nor the backward holds a full score matrix: memory grows linearly with the sequence.
  The CPU default.
- `FlashAttention`: MindSpore's fused `ops.flash_attention_score` (Ascend only; fp16/bf16 inside).

`make_attention_core(backend)` picks one; `"auto"` means flash on Ascend, chunked elsewhere.
"""

from __future__ import annotations

import math

import mindspore as ms
from mindspore import Tensor, mint, nn, ops

# Added to the scores of masked keys: exp() of it is exactly 0 in float32, and being finite it never makes NaNs.
MASKED_SCORE = -1.0e30

BACKENDS = ("auto", "chunked", "plain", "flash")

# Batched matmuls: on CPU in PyNative `ops.BatchMatMul` is several times faster than `mint.matmul` on 4-D
# tensors. The chunked core feeds it pre-transposed operands, as the transpose flags run ~2x slower here.
_bmm = ops.BatchMatMul()
_bmm_nt = ops.BatchMatMul(transpose_b=True)  # a @ b^T


def mask_to_bias(mask: Tensor) -> Tensor:
    """Turn a 1 = attend / 0 = ignore mask (bool or numeric) into an additive float32 score bias."""
    return (1.0 - mask.astype(ms.float32)) * MASKED_SCORE


def _as_4d(x: Tensor) -> Tensor:
    while x.ndim < 4:
        x = x.expand_dims(0)
    return x


def rows_with_keys(mask: Tensor) -> Tensor:
    """1.0 for query rows that may attend to at least one key, else 0.0; shape (..., S_q or 1, 1).

    Every core returns zeros for rows whose keys are all masked (a defined value instead of NaN or an average
    over padding)."""
    return mint.amax(_as_4d(mask).astype(ms.float32), -1, True)


class PlainAttention(nn.Cell):
    """Scaled dot-product attention that materialises the `(B, heads, S_q, S_k)` score matrix (the reference)."""

    def construct(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        scale = 1.0 / math.sqrt(q.shape[-1])
        scores = _bmm_nt(q * scale, k)
        if mask is not None:
            scores = scores + mask_to_bias(mask)
        probs = mint.softmax(scores.astype(ms.float32), dim=-1).astype(v.dtype)
        out = _bmm(probs, v)
        return out if mask is None else out * rows_with_keys(mask)


def _split(x: Tensor, size: int, axis: int) -> tuple[Tensor, ...]:
    """Contiguous blocks of `size` along `axis` (the last may be shorter). One copy each, instead of a slow
    strided copy every time a view is used (PyNative on CPU)."""
    if x.shape[axis] <= size:
        return (x.contiguous(),)
    return tuple(part.contiguous() for part in mint.split(x, size, axis))


def _t(x: Tensor) -> Tensor:
    """Contiguous transpose of the last two axes."""
    return x.transpose(0, 1, 3, 2).contiguous()


def _with_column(x: Tensor, column: Tensor) -> Tensor:
    """Append `column` (broadcast to x's leading shape, one entry per row) as a last column of x."""
    return mint.cat((x, mint.broadcast_to(column, (*x.shape[:-1], 1))), -1)


def _with_row(x: Tensor, row: Tensor) -> Tensor:
    """Append `row` (broadcast to x's leading shape) as a last row of x."""
    return mint.cat((x, mint.broadcast_to(row, (*x.shape[:-2], 1, x.shape[-1]))), -2)


class _ChunkedAttentionFunction(nn.Cell):
    """Blockwise exact attention with a hand-written, recomputing backward (FlashAttention-2's algorithm).

    Per query block and key block the scores go through MindSpore's fused softmax (on CPU several times faster
    than separate max / subtract / exp / sum kernels); blocks over different keys are merged exactly through
    their log-sum-exp (online softmax). The backward never stores probabilities: it rebuilds each block as
    exp(scores - lse) with the per-row lse folded into the score matmul as an extra column, so no row-broadcast
    runs on a block (those are the slowest CPU kernels), and every matmul takes pre-transposed operands.

    `bias` is (B, 1 or heads, 1, S_k) when `key_bias` (a key-padding mask, folded into the score matmul the same
    way), a general (B, 1 or heads, S_q, S_k) bias when `general_bias`, and ignored otherwise. Returns
    `(out, lse)`; lse (B, heads, S_q, 1) is only meaningful with more than one key block (the single-block
    backward recomputes the softmax directly). Loops run over static shapes, so the cell compiles under jit.
    """

    def __init__(self, chunk_q: int, chunk_k: int, key_bias: bool, general_bias: bool):
        super().__init__()
        self.chunk_q = chunk_q
        self.chunk_k = chunk_k
        self.key_bias = key_bias
        self.general_bias = general_bias

    def _operands(self, q: Tensor, k: Tensor, bias: Tensor):
        """Scaled query blocks (with a ones column for a key bias) and transposed key blocks (with the bias row)."""
        scale = 1.0 / math.sqrt(q.shape[-1])
        qs = q * scale
        k_t = _t(k)
        if self.key_bias:
            qs = _with_column(qs, ops.ones((1, 1, 1, 1), qs.dtype))
            k_t = _with_row(k_t, bias)
        return _split(qs, self.chunk_q, 2), _split(k_t, self.chunk_k, 3)

    def _bias_blocks(self, bias: Tensor, n_q: int, n_k: int):
        """A general bias split into a grid [query block][key block] (broadcast axes are not split)."""
        rows = _split(bias, self.chunk_q, 2) if bias.shape[2] > 1 else (bias,) * n_q
        return tuple(_split(row, self.chunk_k, 3) if row.shape[3] > 1 else (row,) * n_k for row in rows)

    def _forward_block(self, q_block: Tensor, kt_block: Tensor, v_block: Tensor, bias_block, single: bool):
        """Softmax-normalised output of one block pair and (with several key blocks) its log-sum-exp."""
        scores = _bmm(q_block, kt_block)
        if self.general_bias:
            scores = scores + bias_block
        probs = mint.softmax(scores, -1)
        block_out = _bmm(probs, v_block)
        if single:
            return block_out, block_out[..., :1]  # the lse is not needed (see the class docstring)
        # The block's log-sum-exp: its largest score minus the log of its largest probability.
        return block_out, mint.max(scores, -1, True)[0] - mint.log(mint.max(probs, -1, True)[0])

    def construct(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor):
        q_blocks, kt_blocks = self._operands(q, k, bias)
        v_blocks = _split(v, self.chunk_k, 2)
        n_q, n_k = len(q_blocks), len(kt_blocks)
        biases = self._bias_blocks(bias, n_q, n_k) if self.general_bias else ((bias,) * n_k,) * n_q
        outs, lses = (), ()
        for i in range(n_q):
            out, lse = self._forward_block(q_blocks[i], kt_blocks[0], v_blocks[0], biases[i][0], n_k == 1)
            for j in range(1, n_k):  # online softmax: merge each further key block through the log-sum-exps
                block_out, block_lse = self._forward_block(
                    q_blocks[i], kt_blocks[j], v_blocks[j], biases[i][j], False
                )
                new_lse = mint.maximum(lse, block_lse)
                new_lse = new_lse + mint.log(mint.exp(lse - new_lse) + mint.exp(block_lse - new_lse))
                out = out * mint.exp(lse - new_lse) + block_out * mint.exp(block_lse - new_lse)
                lse = new_lse
            outs, lses = (*outs, out), (*lses, lse)
        if n_q == 1:
            return outs[0], lses[0]
        return mint.cat(outs, 2), mint.cat(lses, 2)

    def _grad_block(self, blocks, i: int, j: int, single: bool):
        """dq of query block i from key block j, and that pair's contributions to dk^T and dv^T of key block j."""
        q_blocks, kt_blocks, qt_blocks, do_aug_blocks, dot_blocks, vt_aug_blocks, k_blocks, biases = blocks
        scores = _bmm(q_blocks[i], kt_blocks[j])
        if self.general_bias:
            scores = scores + biases[i][j]
        probs = mint.softmax(scores, -1) if single else mint.exp(scores)
        dscores = probs * _bmm(do_aug_blocks[i], vt_aug_blocks[j])
        return _bmm(dscores, k_blocks[j]), _bmm(qt_blocks[i], dscores), _bmm(dot_blocks[i], probs)

    def _key_block_grads(self, blocks, j: int, n_q: int, single: bool, dq_sums):
        """Gradients from key block j: dq of every query block added to `dq_sums` (empty for the first key
        block), and the full dk^T and dv^T of key block j."""
        dq, dkt, dvt = self._grad_block(blocks, 0, j, single)
        dqs = (dq,) if len(dq_sums) == 0 else (dq_sums[0] + dq,)
        for i in range(1, n_q):
            dq, dkt_part, dvt_part = self._grad_block(blocks, i, j, single)
            dqs = (*dqs, dq) if len(dq_sums) == 0 else (*dqs, dq_sums[i] + dq)
            dkt, dvt = dkt + dkt_part, dvt + dvt_part
        return dqs, dkt, dvt

    def bprop(self, q: Tensor, k: Tensor, v: Tensor, bias: Tensor, out, dout):
        # P = softmax(S) blockwise; dV = P^T dO; dS = P * (dO V^T - D) with D = rowsum(dO * O);
        # dQ = dS K * scale; dK = dS^T (Q * scale). D is folded into dO V^T as an extra column (-D) of dO
        # against a row of ones under V^T; transposed results are accumulated and transposed once at the end.
        o, lse = out
        do = dout[0]
        scale = 1.0 / math.sqrt(q.shape[-1])
        q_blocks, kt_blocks = self._operands(q, k, bias)
        n_q, n_k = len(q_blocks), len(kt_blocks)
        single = n_k == 1
        if (
            not single
        ):  # p = exp(scores - lse): fold -lse into the score matmul as a column against a row of ones
            lse_blocks = _split(lse, self.chunk_q, 2)
            q_blocks = tuple(_with_column(q_blocks[i], -lse_blocks[i]) for i in range(n_q))
            kt_blocks = tuple(_with_row(kt, ops.ones((1, 1, 1, 1), kt.dtype)) for kt in kt_blocks)
        qt_blocks = tuple(_t(block) for block in _split(q * scale, self.chunk_q, 2))
        delta = mint.sum(do * o, -1, True)
        do_aug_blocks = _split(_with_column(do, -delta), self.chunk_q, 2)
        dot_blocks = tuple(_t(block) for block in _split(do, self.chunk_q, 2))
        vt_aug_blocks = _split(_with_row(_t(v), ops.ones((1, 1, 1, 1), v.dtype)), self.chunk_k, 3)
        k_blocks = _split(k, self.chunk_k, 2)
        biases = self._bias_blocks(bias, n_q, n_k) if self.general_bias else ()
        blocks = (q_blocks, kt_blocks, qt_blocks, do_aug_blocks, dot_blocks, vt_aug_blocks, k_blocks, biases)
        dq_blocks, dkt, dvt = self._key_block_grads(blocks, 0, n_q, single, ())
        dkt_blocks, dvt_blocks = (dkt,), (dvt,)
        for j in range(1, n_k):
            dq_blocks, dkt, dvt = self._key_block_grads(blocks, j, n_q, single, dq_blocks)
            dkt_blocks, dvt_blocks = (*dkt_blocks, dkt), (*dvt_blocks, dvt)
        dq = dq_blocks[0] if n_q == 1 else mint.cat(dq_blocks, 2)
        dk = _t(dkt_blocks[0] if n_k == 1 else mint.cat(dkt_blocks, 3))
        dv = _t(dvt_blocks[0] if n_k == 1 else mint.cat(dvt_blocks, 3))
        return dq * scale, dk, dv, ops.zeros_like(bias)


class ChunkedAttention(nn.Cell):
    """Memory-efficient exact attention, computed block by block with an online softmax.

    Extra memory is a few `(B, heads, chunk_size, key_chunk_size)` blocks instead of `(B, heads, S_q, S_k)`
    score matrices, in the forward and in the backward (which recomputes the blocks), so it grows linearly with
    the sequence length. Equal to `PlainAttention` up to float32 rounding, masks included.
    """

    def __init__(self, chunk_size: int = 2048, key_chunk_size: int = 4096):
        super().__init__()
        if chunk_size < 1 or key_chunk_size < 1:
            raise ValueError(
                f"ChunkedAttention: chunk sizes must be >= 1, got {chunk_size}, {key_chunk_size}"
            )
        self.chunk_size = chunk_size
        self.key_chunk_size = key_chunk_size
        self.unmasked = _ChunkedAttentionFunction(chunk_size, key_chunk_size, False, False)
        self.key_masked = _ChunkedAttentionFunction(chunk_size, key_chunk_size, True, False)
        self.masked = _ChunkedAttentionFunction(chunk_size, key_chunk_size, False, True)

    def construct(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            out, _ = self.unmasked(q, k, v, ops.zeros((1, 1, 1, 1), q.dtype))
            return out
        mask = _as_4d(mask)
        bias = mask_to_bias(mask).astype(q.dtype)
        has_keys = rows_with_keys(mask).astype(q.dtype)
        if mask.shape[2] == 1:  # key padding: the bias folds into the score matmul, the row check into v
            out, _ = self.key_masked(q, k, v * has_keys, bias)
            return out
        out, _ = self.masked(q, k, v, bias)
        return out * has_keys


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


def make_attention_core(backend: str = "auto", chunk_size: int = 2048, key_chunk_size: int = 4096) -> nn.Cell:
    """Build an attention core: `"auto"`, `"chunked"`, `"plain"` or `"flash"` (Ascend only); the chunk sizes
    are the chunked core's query and key block lengths."""
    if backend not in BACKENDS:
        raise ValueError(f"attention_backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = default_attention_backend()
    if backend == "flash":
        return FlashAttention()
    if backend == "plain":
        return PlainAttention()
    return ChunkedAttention(chunk_size, key_chunk_size)
