"""Attention cores: chunked online-softmax attention equals plain attention (values and gradients) and a numpy
reference, with and without masks, in PyNative and under mindspore.jit."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mg_transformer.attention import (
    ChunkedAttention,
    FlashAttention,
    PlainAttention,
    default_attention_backend,
    make_attention_core,
)


def numpy_attention(q, k, v, mask=None):
    """softmax(q k^T / sqrt(d)) v over the unmasked keys, in float64; rows with no key to attend give zeros."""
    q, k, v = (a.astype(np.float64) for a in (q, k, v))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    keep = np.ones(scores.shape, bool) if mask is None else np.broadcast_to(mask, scores.shape) > 0
    scores = np.where(keep, scores, -np.inf)
    row_max = np.where(keep.any(-1, keepdims=True), scores.max(-1, keepdims=True), 0.0)
    probs = np.where(keep, np.exp(scores - row_max), 0.0)
    total = probs.sum(-1, keepdims=True)
    return np.divide(probs, total, out=np.zeros_like(probs), where=total > 0) @ v


def qkv(batch, heads, seq_q, seq_k, dim, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((batch, heads, seq_q, dim)).astype(np.float32),
        rng.standard_normal((batch, heads, seq_k, dim)).astype(np.float32),
        rng.standard_normal((batch, heads, seq_k, dim)).astype(np.float32),
        rng.standard_normal((batch, heads, seq_q, dim)).astype(np.float32),
    )


def key_padding_mask(batch, seq_k, seed=1):
    """(B, 1, 1, S_k) mask with a different number of padded keys per sample, sample 0 unpadded."""
    mask = np.ones((batch, 1, 1, seq_k), np.float32)
    for b in range(1, batch):
        mask[b, ..., seq_k - 3 * b :] = 0.0
    return mask


def value_and_grads(core, q, k, v, dout, mask, jit=False):
    def loss(q, k, v):
        return (core(q, k, v, None if mask is None else Tensor(mask)) * Tensor(dout)).sum()

    fn = ms.value_and_grad(loss, grad_position=(0, 1, 2))
    if jit:
        fn = ms.jit(fn)
    value, grads = fn(Tensor(q), Tensor(k), Tensor(v))
    return value.asnumpy(), [g.asnumpy() for g in grads]


CASES = {
    # name: (batch, heads, S_q, S_k, head_dim, query chunk, key chunk, mask kind)
    "self-uneven-blocks": (2, 3, 20, 20, 8, 8, 8, None),
    "cross-key-padding": (3, 2, 13, 22, 16, 8, 8, "keys"),
    "query-and-key-mask": (2, 2, 12, 17, 8, 6, 5, "full"),
    "single-block-keys": (2, 2, 12, 12, 8, 5, 64, "keys"),
    "one-block": (1, 2, 12, 12, 8, 64, 64, None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_chunked_equals_plain_and_numpy(name):
    batch, heads, seq_q, seq_k, dim, chunk, key_chunk, mask_kind = CASES[name]
    q, k, v, dout = qkv(batch, heads, seq_q, seq_k, dim)
    mask = None
    if mask_kind == "keys":
        mask = key_padding_mask(batch, seq_k)
    elif mask_kind == "full":
        rng = np.random.default_rng(2)
        mask = (rng.random((batch, 1, seq_q, seq_k)) > 0.4).astype(np.float32)
        mask[:, :, 0] = 0.0  # a query that may attend to nothing: zeros
    expected = numpy_attention(q, k, v, mask)
    m = None if mask is None else Tensor(mask)
    plain = PlainAttention()(Tensor(q), Tensor(k), Tensor(v), m).asnumpy()
    chunked = ChunkedAttention(chunk, key_chunk)(Tensor(q), Tensor(k), Tensor(v), m).asnumpy()
    np.testing.assert_allclose(plain, expected, atol=1e-5)
    np.testing.assert_allclose(chunked, expected, atol=1e-5)
    np.testing.assert_allclose(chunked, plain, atol=1e-5)

    value_p, grads_p = value_and_grads(PlainAttention(), q, k, v, dout, mask)
    value_c, grads_c = value_and_grads(ChunkedAttention(chunk, key_chunk), q, k, v, dout, mask)
    np.testing.assert_allclose(value_c, value_p, rtol=1e-5)
    for grad_c, grad_p, label in zip(grads_c, grads_p, "qkv", strict=True):
        assert np.abs(grad_p).max() > 1e-3, f"d{label} is trivially zero"
        np.testing.assert_allclose(grad_c, grad_p, atol=1e-5, err_msg=f"d{label}")


def test_rows_without_keys_give_zeros_and_no_gradient():
    q, k, v, dout = qkv(2, 1, 4, 6, 8)
    keys = np.ones((2, 1, 1, 6), np.float32)
    keys[1] = 0.0  # sample 1 has no text at all
    rows = np.ones((2, 1, 4, 6), np.float32)
    rows[0, 0, 2] = 0.0  # query 2 of sample 0 may attend to nothing
    for mask in (keys, rows):
        for core in (PlainAttention(), ChunkedAttention(2, 4)):
            out = core(Tensor(q), Tensor(k), Tensor(v), Tensor(mask)).asnumpy()
            np.testing.assert_allclose(out, numpy_attention(q, k, v, mask), atol=1e-5)
            _, (dq, dk, dv) = value_and_grads(core, q, k, v, dout, mask)
            empty = ~(mask > 0).any(-1)[..., None]  # (B, 1, S_q or 1, 1)
            assert np.all(np.where(np.broadcast_to(empty, dq.shape), dq, 0.0) == 0.0)
            assert np.isfinite(dk).all() and np.isfinite(dv).all()


def test_rectangular_chunks_and_bool_mask():
    q, k, v, _dout = qkv(2, 2, 20, 14, 8, seed=3)
    mask = key_padding_mask(2, 14).astype(bool)
    expected = numpy_attention(q, k, v, mask)
    out = ChunkedAttention(chunk_size=8, key_chunk_size=5)(Tensor(q), Tensor(k), Tensor(v), Tensor(mask))
    np.testing.assert_allclose(out.asnumpy(), expected, atol=1e-5)


def test_chunked_gradients_under_jit_equal_pynative():
    q, k, v, dout = qkv(2, 2, 20, 20, 8, seed=4)
    mask = key_padding_mask(2, 20)
    value_e, grads_e = value_and_grads(ChunkedAttention(8, 8), q, k, v, dout, mask)
    value_j, grads_j = value_and_grads(ChunkedAttention(8, 8), q, k, v, dout, mask, jit=True)
    _, grads_plain = value_and_grads(PlainAttention(), q, k, v, dout, mask)
    np.testing.assert_allclose(value_j, value_e, rtol=1e-6)
    for grad_j, grad_e, grad_p in zip(grads_j, grads_e, grads_plain, strict=True):
        np.testing.assert_allclose(grad_j, grad_e, atol=1e-6)
        np.testing.assert_allclose(grad_j, grad_p, atol=1e-5)


def test_backend_selection():
    assert default_attention_backend() == "chunked"  # this suite runs on CPU
    assert isinstance(make_attention_core("auto"), ChunkedAttention)
    assert isinstance(make_attention_core("plain"), PlainAttention)
    assert isinstance(make_attention_core("flash"), FlashAttention)
    with pytest.raises(ValueError, match="attention_backend"):
        make_attention_core("sdpa")
    with pytest.raises(ValueError, match="chunk"):
        ChunkedAttention(0)


@pytest.mark.ascend
def test_flash_attention_matches_plain_on_ascend():
    ms.set_context(device_target="Ascend")
    q, k, v, _ = qkv(2, 4, 128, 96, 64)
    mask = key_padding_mask(2, 96)
    expected = PlainAttention()(Tensor(q), Tensor(k), Tensor(v), Tensor(mask)).asnumpy()
    out = FlashAttention()(Tensor(q), Tensor(k), Tensor(v), Tensor(mask)).asnumpy()
    np.testing.assert_allclose(out, expected, atol=2e-2)  # bf16 inside the kernel
