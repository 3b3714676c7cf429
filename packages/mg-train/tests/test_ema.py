"""EMA shadows follow the closed form of repeated averaging and restore by name."""

from __future__ import annotations

import numpy as np
import pytest
from mindspore import Parameter, Tensor, ops

from mg_train.ema import EMA


def test_updates_follow_the_recurrence_and_copy_back():
    w = Parameter(Tensor(np.zeros(3, np.float32)), name="w")
    ema = EMA([w], decay=0.9)
    expected = np.zeros(3)
    for step in range(1, 6):
        w.set_data(Tensor(np.full(3, float(step), np.float32)))
        ema.update()
        expected = 0.9 * expected + 0.1 * step
    np.testing.assert_allclose(ema.state_dict()["w"], expected, rtol=1e-6)
    ema.copy_to([w])
    np.testing.assert_allclose(w.asnumpy(), expected, rtol=1e-6)


def test_state_round_trip_and_validation():
    w = Parameter(Tensor(np.ones(2, np.float32)), name="w")
    ema = EMA([w], decay=0.5)
    ema.load_state_dict({"w": np.array([4.0, 8.0], np.float32)})
    ema.update()
    np.testing.assert_allclose(ema.state_dict()["w"], [2.5, 4.5])
    with pytest.raises(KeyError, match="lacks 1 parameters"):
        ema.load_state_dict({})
    with pytest.raises(ValueError, match="decay"):
        EMA([w], decay=1.0)


def test_compiled_update_equals_eager():
    """`jit=True` runs the same recurrence as one graph, also after a state load (done in place)."""
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    eager_params = [
        Parameter(Tensor(rng.standard_normal(s).astype(np.float32)), name=f"p{i}")
        for i, s in enumerate(shapes)
    ]
    jit_params = [Parameter(Tensor(p.asnumpy()), name=p.name) for p in eager_params]
    eager, compiled = EMA(eager_params, decay=0.8), EMA(jit_params, decay=0.8, jit=True)
    start = {p.name: rng.standard_normal(p.shape).astype(np.float32) for p in eager_params}
    eager.load_state_dict(start)
    compiled.update()  # compiles against the initial shadows; the load below must reach the same buffers
    compiled.load_state_dict(start)
    for _ in range(3):
        for a, b in zip(eager_params, jit_params, strict=True):
            value = rng.standard_normal(a.shape).astype(np.float32)
            a.set_data(Tensor(value))
            ops.assign(b, Tensor(value))  # in place, as the optimizer writes weights
        eager.update()
        compiled.update()
    expected = eager.state_dict()
    got = compiled.state_dict()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-6, err_msg=name)
    assert not np.allclose(expected["p0"], start["p0"])
