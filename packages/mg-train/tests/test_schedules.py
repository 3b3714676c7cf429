"""LR schedules against closed forms, and the plateau reducer's halving rule."""

from __future__ import annotations

import math

import pytest

from mg_train.schedules import PlateauReducer, learning_rate


def test_warmup_is_linear_then_constant():
    lrs = [learning_rate(s, 1.0, 4, "constant", 100, 0.0) for s in range(6)]
    assert lrs == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_reaches_min_lr_at_the_end_and_half_way_is_the_midpoint():
    base, low, warm, total = 2.0, 0.2, 10, 110
    assert learning_rate(warm, base, warm, "cosine", total, low) == pytest.approx(base)
    assert learning_rate(warm + 50, base, warm, "cosine", total, low) == pytest.approx((base + low) / 2)
    assert learning_rate(total, base, warm, "cosine", total, low) == pytest.approx(low)
    assert learning_rate(10 * total, base, warm, "cosine", total, low) == pytest.approx(low)
    step = 37
    expected = low + 0.5 * (base - low) * (1 + math.cos(math.pi * (step - warm) / (total - warm)))
    assert learning_rate(step, base, warm, "cosine", total, low) == pytest.approx(expected)


def test_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        learning_rate(50, 1.0, 0, "linear", 100, 0.0)


def test_plateau_halves_after_patience_and_state_round_trips():
    reducer = PlateauReducer(factor=0.5, patience=2)
    reduced = [reducer.observe(v) for v in [1.0, 0.9, 0.95, 0.91, 0.92, 0.93, 0.94, 0.95]]
    assert reduced == [False, False, False, False, True, False, False, True]
    assert reducer.scale == 0.25
    clone = PlateauReducer(factor=0.5, patience=2)
    clone.load_state_dict(reducer.state_dict())
    assert clone.observe(0.99) == reducer.observe(0.99)


def test_plateau_ignores_a_non_finite_validation_loss_and_its_state_is_json():
    import json

    reducer = PlateauReducer(factor=0.5, patience=0)
    assert json.loads(json.dumps(reducer.state_dict(), allow_nan=False))["best"] is None  # no Infinity
    reducer.observe(1.0)
    assert not reducer.observe(
        float("nan")
    )  # not a plateau: patience 0 would halve on a real non-improvement
    assert reducer.scale == 1.0 and reducer.bad_checks == 0 and reducer.best == 1.0
    assert reducer.observe(2.0) and reducer.scale == 0.5
    restored = PlateauReducer()
    restored.load_state_dict(json.loads(json.dumps(PlateauReducer().state_dict())))
    assert restored.best == float("inf")
