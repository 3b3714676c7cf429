"""The matmul convolutions equal naive numpy convolutions, forward and backward, on awkward shapes."""

import numpy as np
import pytest
from mindspore import Tensor

from mg_tae import conv

RNG = np.random.default_rng(0)


def _t(a):
    return Tensor(np.asarray(a, np.float32))


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (1, 1, 1, 4), (3, 4, 2, 8), (1, 6, 6, 16)])
@pytest.mark.parametrize("c_out", [5, 16])
def test_conv3x3_matches_numpy(shape, c_out, numpy_conv):
    x = RNG.standard_normal(shape)
    w = RNG.standard_normal((c_out, shape[-1], 3, 3))
    b = RNG.standard_normal(c_out)
    got = conv.conv3x3_rows(_t(x), _t(w), _t(b)).asnumpy()
    np.testing.assert_allclose(got, numpy_conv.conv2d(x, w, b), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 6, 8, 3), (1, 2, 2, 4), (3, 4, 10, 8)])
def test_conv3x3_stride2_matches_numpy(shape, numpy_conv):
    x = RNG.standard_normal(shape)
    w = RNG.standard_normal((6, shape[-1], 3, 3))
    b = RNG.standard_normal(6)
    got = conv.conv3x3_stride2_rows(_t(x), _t(w), _t(b)).asnumpy()
    np.testing.assert_allclose(got, numpy_conv.conv2d(x, w, b, stride=2), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("b,t", [(1, 1), (1, 5), (2, 4), (3, 3)])
@pytest.mark.parametrize("stride", [1, 2])
def test_temporal_conv_matches_numpy(b, t, stride, numpy_conv):
    x = RNG.standard_normal((b, t, 3, 2, 4))
    w = RNG.standard_normal((5, 4, 3))
    bias = RNG.standard_normal(5)
    fn = conv.temporal_conv3_rows if stride == 1 else conv.temporal_conv3_stride2_rows
    got = fn(_t(x), _t(w), _t(bias)).asnumpy()
    want = numpy_conv.temporal_conv(x, w, bias, stride)
    assert got.shape == want.shape == (b, -(-t // stride), 3, 2, 5)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
