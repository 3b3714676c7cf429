"""The hand-written backward passes of the matmul convs (`Conv3x3Rows`, `Conv3x3Stride2Rows`, `TemporalConv3Rows`,
`TemporalConv3Stride2Rows`) give the gradients wrt input, weight and bias of autograd through the plain forward
and of an exact numpy reference, in PyNative and under jit, on odd and degenerate sizes."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mg_tae import conv

# name -> (hand-written-backward function, plain autograd function, numpy reference (fixture `numpy_conv`), stride)
OPS = {
    "conv3x3": (conv.conv3x3_rows_fast, conv.conv3x3_rows, "conv2d", 1),
    "conv3x3_stride2": (conv.conv3x3_stride2_rows_fast, conv.conv3x3_stride2_rows, "conv2d", 2),
    "temporal": (conv.temporal_conv3_rows_fast, conv.temporal_conv3_rows, "temporal_conv", 1),
    "temporal_stride2": (
        conv.temporal_conv3_stride2_rows_fast,
        conv.temporal_conv3_stride2_rows,
        "temporal_conv",
        2,
    ),
}


@pytest.fixture
def reference(numpy_conv):
    """`reference(op)`: the numpy forward (x, w, b) -> y of op."""

    def forward(op):
        _, _, name, stride = OPS[op]
        return lambda x, w, b: getattr(numpy_conv, name)(x, w, b, stride=stride)

    return forward


# (op, input shape channels-last, C_out): odd spatial sizes and frame counts, single pixels / frames, batches.
CASES = [
    ("conv3x3", (2, 5, 7, 3), 4),
    ("conv3x3", (1, 1, 1, 2), 3),
    ("conv3x3", (3, 4, 3, 5), 2),
    (
        "conv3x3_stride2",
        (2, 6, 8, 3),
        4,
    ),  # stride 2 needs even H and W (the encoder checks divisibility by 8)
    ("conv3x3_stride2", (1, 2, 2, 2), 3),
    ("conv3x3_stride2", (3, 4, 10, 5), 2),
    ("temporal", (1, 1, 3, 2, 4), 3),
    ("temporal", (2, 5, 3, 1, 3), 4),
    ("temporal", (3, 2, 1, 3, 2), 2),
    ("temporal_stride2", (1, 1, 2, 3, 3), 2),
    ("temporal_stride2", (1, 5, 3, 1, 2), 3),
    ("temporal_stride2", (2, 4, 1, 2, 3), 2),
    ("temporal_stride2", (3, 3, 2, 2, 4), 4),
    ("temporal_stride2", (2, 2, 1, 1, 2), 2),
]


def _weight_shape(op, c, c_out):
    return (c_out, c, 3) if op.startswith("temporal") else (c_out, c, 3, 3)


def _data(ref, op, shape, c_out, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    w = rng.standard_normal(_weight_shape(op, shape[-1], c_out))
    b = rng.standard_normal(c_out)
    y_shape = ref(x, w, b).shape
    g = rng.standard_normal(y_shape)  # the upstream gradient dL/dY
    return x, w, b, g


def numpy_grads(ref, x, w, b, g):
    """Exact gradients of L = sum(g * ref(x, w, b)) from the naive numpy conv `ref`, by linearity: each entry is the
    response of the conv to one basis input (x, or a single-output-channel one-hot kernel) contracted with g."""
    dx = np.zeros_like(x)
    for index in np.ndindex(*x.shape):
        basis = np.zeros_like(x)
        basis[index] = 1.0
        dx[index] = (g * ref(basis, w, None)).sum()
    dw = np.zeros_like(w)
    for index in np.ndindex(*w.shape[1:]):  # (c_in, *tap): one conv serves every output channel
        onehot = np.zeros((1, *w.shape[1:]))
        onehot[(0, *index)] = 1.0
        response = ref(x, onehot, None)[..., 0]
        dw[(slice(None), *index)] = np.tensordot(
            g, response, axes=(tuple(range(g.ndim - 1)), tuple(range(g.ndim - 1)))
        )
    db = g.reshape(-1, g.shape[-1]).sum(0)
    return dx, dw, db


def ms_grads(fn, x, w, b, g, jit=False):
    gt = Tensor(g.astype(np.float32))

    def loss(xx, ww, bb):
        return (fn(xx, ww, bb) * gt).sum()

    grad_fn = ms.grad(loss, grad_position=(0, 1, 2))
    if jit:
        grad_fn = ms.jit(grad_fn)
    grads = grad_fn(*(Tensor(a.astype(np.float32)) for a in (x, w, b)))
    return [t.asnumpy() for t in grads]


def _assert_close(got, want, what):
    for name, a, b in zip(("dx", "dw", "db"), got, want, strict=True):
        assert a.shape == b.shape, f"{what} {name}"
        np.testing.assert_allclose(
            a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()), err_msg=f"{what} {name}"
        )


@pytest.mark.parametrize("op,shape,c_out", CASES)
def test_hand_written_backward_matches_numpy_and_autograd(op, shape, c_out, reference):
    fast, plain, _, _ = OPS[op]
    x, w, b, g = _data(reference(op), op, shape, c_out)
    want = numpy_grads(reference(op), x, w, b, g)
    _assert_close(ms_grads(fast, x, w, b, g), want, f"{op} hand-written vs numpy")
    _assert_close(ms_grads(plain, x, w, b, g), want, f"{op} autograd vs numpy")


@pytest.mark.parametrize("op,shape,c_out", [CASES[0], CASES[5], CASES[7], CASES[11]])
def test_hand_written_backward_under_jit(op, shape, c_out, reference):
    fast, plain, _, _ = OPS[op]
    x, w, b, g = _data(reference(op), op, shape, c_out, seed=1)
    want = numpy_grads(reference(op), x, w, b, g)
    _assert_close(ms_grads(fast, x, w, b, g, jit=True), want, f"{op} hand-written (jit) vs numpy")
    _assert_close(ms_grads(plain, x, w, b, g, jit=True), want, f"{op} autograd (jit) vs numpy")


@pytest.mark.parametrize("op,shape,c_out", [CASES[0], CASES[3], CASES[7], CASES[12]])
def test_hand_written_backward_in_row_chunks_and_by_slices(op, shape, c_out, monkeypatch, reference):
    """Tiny im2col blocks force several row chunks (joined forward, summed weight gradients), and a zero gather
    threshold forces the slice-built windows used for wide channels."""
    monkeypatch.setattr(conv, "MAX_WINDOW_ELEMENTS", 7 * 9 * shape[-1] * 2)
    monkeypatch.setattr(conv, "GATHER_MAX_CHANNELS", 0)
    assert len(conv.row_chunks(50, 9 * shape[-1])) > 1
    fast = OPS[op][0]
    x, w, b, g = _data(reference(op), op, shape, c_out, seed=2)
    _assert_close(ms_grads(fast, x, w, b, g), numpy_grads(reference(op), x, w, b, g), f"{op} chunked, sliced")


def test_wide_channels_take_the_slice_windows_and_match_numpy(numpy_conv):
    """C >= GATHER_MAX_CHANNELS builds windows by slicing (the default for the SD3.5-size TAE)."""
    c = conv.GATHER_MAX_CHANNELS
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 5, c))
    w = rng.standard_normal((2, c, 3, 3)) * 0.1
    b = rng.standard_normal(2)
    g = rng.standard_normal((1, 3, 5, 2))
    got = ms_grads(conv.conv3x3_rows_fast, x, w, b, g)
    want = ms_grads(conv.conv3x3_rows, x, w, b, g)  # the numpy basis loop is too slow at this width
    np.testing.assert_allclose(
        conv.conv3x3_rows_fast(*(Tensor(a.astype(np.float32)) for a in (x, w, b))).asnumpy(),
        numpy_conv.conv2d(x, w, b),
        rtol=1e-4,
        atol=1e-4,
    )
    _assert_close(got, want, "wide conv3x3 hand-written vs autograd")
    # and the weight gradient independently: dW[o, c, a, b] = sum over pixels of g[o] * padded x shifted by (a, b)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dw = np.stack(
        [
            np.stack([np.einsum("nhwo,nhwc->oc", g, xp[:, a : a + 3, bb : bb + 5]) for bb in range(3)], -1)
            for a in range(3)
        ],
        -2,
    )
    np.testing.assert_allclose(got[1], dw, rtol=1e-4, atol=1e-4 * np.abs(dw).max())
