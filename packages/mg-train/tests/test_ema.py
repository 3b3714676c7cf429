"""EMA shadows follow the closed form of repeated averaging and restore by name."""

from __future__ import annotations

import numpy as np
import pytest
from mindspore import Parameter, Tensor

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
