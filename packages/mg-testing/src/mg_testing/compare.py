"""Comparing arrays and nested outputs with a tolerance, and messages that say where and by how much they differ."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from mindspore import Tensor


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far `actual` may lie from `expected`, element by element:

        |actual - expected| <= atol + rtol * |expected| + of_max * max|expected|

    `rtol` and `atol` mean what they mean in `numpy.testing.assert_allclose`. `of_max` scales with the largest
    magnitude of the whole expected tensor: the right measure for float32 results that differ only in summation
    order (jit vs PyNative, recompute vs stored activations), where small elements carry the same absolute
    rounding error as large ones. For parameter gradients `across_parameters=True` takes that largest magnitude
    over all parameters together, for gradients whose true value is exactly zero (e.g. an attention key bias)
    and which would otherwise be compared against their own rounding noise.

    `Tolerance()` demands exact equality. NaNs must sit at the same places in both; infinities must be equal.
    """

    rtol: float = 0.0
    atol: float = 0.0
    of_max: float = 0.0
    across_parameters: bool = False

    def __str__(self) -> str:
        parts = [
            f"{k}={v:g}" for k, v in (("rtol", self.rtol), ("atol", self.atol), ("of_max", self.of_max)) if v
        ]
        if self.across_parameters:
            parts.append("across_parameters")
        return ", ".join(parts) or "exact"


EXACT = Tolerance()


def to_numpy(value: Any) -> np.ndarray:
    """A MindSpore tensor, numpy array or Python number as a numpy array."""
    if isinstance(value, Tensor):
        return value.asnumpy()
    return np.asarray(value)


def flatten(value: Any, name: str = "output") -> list[tuple[str, Any]]:
    """(path, leaf) pairs of a nested output: tensors, arrays and numbers are leaves (as numpy arrays), `None` is
    kept as `None`; tuples, lists, dicts, named tuples and dataclasses are walked. Paths read like
    `output[0]`, `output['mean']`, `output.logvar`."""
    if value is None:
        return [(name, None)]
    if isinstance(value, (Tensor, np.ndarray, np.generic, int, float, bool)):
        return [(name, to_numpy(value))]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        pairs = []
        for field in dataclasses.fields(value):
            pairs += flatten(getattr(value, field.name), f"{name}.{field.name}")
        return pairs
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # named tuple
        pairs = []
        for field in value._fields:
            pairs += flatten(getattr(value, field), f"{name}.{field}")
        return pairs
    if isinstance(value, (tuple, list)):
        pairs = []
        for i, item in enumerate(value):
            pairs += flatten(item, f"{name}[{i}]")
        return pairs
    if isinstance(value, Mapping):
        pairs = []
        for key, item in value.items():
            pairs += flatten(item, f"{name}[{key!r}]")
        return pairs
    raise TypeError(
        f"{name}: cannot compare a {type(value).__name__}; return tensors, arrays, numbers or tuples, lists, "
        "dicts and dataclasses of them (pass a `forward` that picks the tensors out)"
    )


def difference(
    actual: Any, expected: Any, tol: Tolerance = EXACT, name: str = "value", scale=None
) -> str | None:
    """None when `actual` is within `tol` of `expected`; otherwise a one-line description of the worst element.

    `scale` replaces max|expected| as the reference of `tol.of_max` (the parameter-gradient comparison passes the
    largest magnitude over all parameters when `tol.across_parameters`).
    """
    a, e = to_numpy(actual), to_numpy(expected)
    if a.shape != e.shape:
        return f"{name}: shape {a.shape} != expected {e.shape}"
    if a.size == 0:
        return None
    if a.dtype == np.bool_ or e.dtype == np.bool_ or not (_numeric(a) and _numeric(e)):
        if np.array_equal(a, e):
            return None
        bad = np.argwhere(a != e)
        return f"{name}: {len(bad)} of {a.size} elements differ, first at index {tuple(bad[0])}"
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    finite_e = np.isfinite(e64)
    if scale is None:
        scale = float(np.abs(e64[finite_e]).max()) if finite_e.any() else 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a64 - e64)
        allowed = tol.atol + tol.rtol * np.abs(e64) + tol.of_max * scale
    # NaN and infinities: only the same special value at the same place passes, whatever the tolerance.
    special = ~(np.isfinite(a64) & finite_e)
    same = (np.isnan(a64) & np.isnan(e64)) | (a64 == e64)
    bad = np.where(special, ~same, diff > allowed)
    if not bad.any():
        return None
    diff = np.where(special, np.where(same, 0.0, np.inf), diff)
    allowed = np.where(special, 0.0, allowed)
    idx = np.unravel_index(np.argmax(np.where(bad, diff - allowed, -np.inf)), a.shape)
    where = f" at index {tuple(int(i) for i in idx)}" if a.ndim else ""
    return (
        f"{name}: max abs difference {diff.max():.3g}; worst{where}: actual {a64[idx]:.7g}, expected "
        f"{e64[idx]:.7g}, allowed {allowed[idx]:.3g}; {int(bad.sum())} of {a.size} elements outside tolerance "
        f"({tol}); max |expected| {scale:.3g}"
    )


def _numeric(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.number)


def assert_close(actual: Any, expected: Any, tol: Tolerance = EXACT, name: str = "value") -> None:
    """Raise AssertionError naming `name`, the largest difference and where it is, unless within `tol`.

    Tensors, arrays and numbers compare directly; nested outputs (tuples, lists, dicts, dataclasses) compare leaf
    by leaf and must have the same structure. Every differing leaf is reported, not just the first.
    """
    failures = compare(actual, expected, tol, name)
    if failures:
        raise AssertionError(_join(failures))


def compare(actual: Any, expected: Any, tol: Tolerance = EXACT, name: str = "value") -> list[str]:
    """The list of differences between two nested outputs (empty when they agree within `tol`)."""
    got, want = flatten(actual, name), flatten(expected, name)
    got_paths, want_paths = [p for p, _ in got], [p for p, _ in want]
    if got_paths != want_paths:
        return [f"{name}: structure differs: {got_paths} vs expected {want_paths}"]
    failures = []
    for (path, a), (_, e) in zip(got, want, strict=True):
        if a is None or e is None:
            if (a is None) != (e is None):
                failures.append(
                    f"{path}: {'None' if a is None else 'a value'} vs expected "
                    f"{'None' if e is None else 'a value'}"
                )
            continue
        message = difference(a, e, tol, path)
        if message:
            failures.append(message)
    return failures


def _join(failures: list[str], limit: int = 20) -> str:
    shown = failures[:limit]
    if len(failures) > limit:
        shown.append(f"... and {len(failures) - limit} more")
    return "\n".join(shown)


def describe(value: Any) -> str:
    """A short description of an argument for messages: tensors and arrays by dtype and shape."""
    if isinstance(value, Tensor):
        return f"Tensor({value.dtype}, {tuple(value.shape)})"
    if isinstance(value, np.ndarray):
        return f"ndarray({value.dtype}, {value.shape})"
    if isinstance(value, tuple):
        inner = ", ".join(describe(v) for v in value)
        return f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, list):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
