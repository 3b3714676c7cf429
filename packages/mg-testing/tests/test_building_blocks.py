"""The pieces under the checks: tolerances and their messages, gradient comparison, and the fresh process."""

import os

import numpy as np
import pytest
from mindspore import Tensor

from mg_testing import Gradients, Tolerance, assert_close, assert_gradients_close, run_in_fresh_process


def test_tolerance_terms_add_up():
    expected = np.array([100.0, 1.0, 0.0])
    assert_close(expected + np.array([0.5, 0.01, 0.0]), expected, Tolerance(rtol=0.01, atol=0.005))
    assert_close(
        expected + np.array([0.0, 0.0, 0.9]), expected, Tolerance(of_max=0.01)
    )  # 1% of max|expected| = 1
    with pytest.raises(AssertionError, match=r"value: max abs difference 0\.02; worst at index \(2,\)"):
        assert_close(expected + np.array([0.0, 0.0, 0.02]), expected, Tolerance(rtol=0.01, atol=0.005))
    with pytest.raises(AssertionError, match=r"1 of 3 elements outside tolerance \(exact\)"):
        assert_close(Tensor(np.float32([1, 2, 3])), np.float32([1, 2, 3.0001]))
    assert (
        str(Tolerance(rtol=1e-5, of_max=1e-6, across_parameters=True))
        == "rtol=1e-05, of_max=1e-06, across_parameters"
    )


def test_nan_inf_shapes_and_nested_structures():
    assert_close([np.nan, np.inf], [np.nan, np.inf])
    for actual, expected in [
        ([np.nan, 1.0], [0.0, 1.0]),
        ([np.inf, 1.0], [1e30, 1.0]),
        ([1e30, 1.0], [np.inf, 1.0]),
    ]:
        with pytest.raises(AssertionError, match=r"max abs difference inf; worst at index \(0,\)"):
            assert_close(np.array(actual), np.array(expected), Tolerance(rtol=1, atol=10))
    with pytest.raises(AssertionError, match=r"out: shape \(2,\) != expected \(3,\)"):
        assert_close(np.zeros(2), np.zeros(3), name="out")
    nested = {"mean": Tensor(np.ones(2, np.float32)), "parts": (np.zeros(1), None)}
    assert_close(nested, {"mean": np.ones(2, np.float32), "parts": (np.zeros(1), None)})
    with pytest.raises(AssertionError, match=r"output\['parts'\]\[0\]: max abs difference 1"):
        assert_close(nested, {"mean": np.ones(2), "parts": (np.ones(1), None)}, name="output")
    with pytest.raises(AssertionError, match="structure differs"):
        assert_close((np.zeros(1),), (np.zeros(1), np.zeros(1)))
    with pytest.raises(TypeError, match="cannot compare a object"):
        assert_close(object(), object())


def test_gradient_comparison_scales_across_parameters_when_asked():
    """A gradient that is zero in truth shows rounding noise: compared on its own scale it fails, on the scale of
    all parameters it passes."""
    expected = Gradients(1.0, (), {"w": np.array([10.0, -4.0]), "key_bias": np.array([1e-9, -2e-9])})
    actual = Gradients(1.0, (), {"w": np.array([10.0001, -4.0]), "key_bias": np.array([3e-9, 1e-9])})
    with pytest.raises(AssertionError, match="gradient of key_bias") as info:
        assert_gradients_close(actual, expected, grad_tol=Tolerance(of_max=1e-4))
    assert "gradient of w" not in str(info.value)
    assert_gradients_close(actual, expected, grad_tol=Tolerance(of_max=1e-4, across_parameters=True))
    with pytest.raises(AssertionError, match=r"missing \['w'\], unexpected \['v'\]"):
        assert_gradients_close(Gradients(1.0, (), {"v": np.zeros(1)}), Gradients(1.0, (), {"w": np.zeros(1)}))
    with pytest.raises(AssertionError, match=r"ctx: 1 mismatch\(es\)\nloss: max abs difference 0\.1"):
        assert_gradients_close(Gradients(1.1, (), {}), Gradients(1.0, (), {}), context="ctx")


COUNTER = {"calls": 0}


def count_and_report(offset, *, scale=1):
    COUNTER["calls"] += 1
    return os.getpid(), COUNTER["calls"] * scale + offset


def fail_with(kind):
    if kind == "assert":
        raise AssertionError("gradient of w: max abs difference 3")
    raise KeyError("no such thing")


def test_fresh_process_returns_results_from_a_clean_interpreter():
    COUNTER["calls"] = 41  # set here, invisible there
    pid, value = run_in_fresh_process(count_and_report, 100, scale=2)
    assert pid != os.getpid() and value == 102


def test_fresh_process_reports_failures():
    with pytest.raises(
        AssertionError, match=r"gradient of w: max abs difference 3\n\(in a fresh process running fail_with\)"
    ):
        run_in_fresh_process(fail_with, "assert")
    with pytest.raises(
        RuntimeError, match=r"fail_with raised KeyError in a fresh process:(.|\n)*no such thing"
    ):
        run_in_fresh_process(fail_with, "other")
    with pytest.raises(ValueError, match="module-level function"):
        run_in_fresh_process(lambda: None)
