"""`compile_fn`: a function compiled with `mindspore.jit`, called with per-step tuples of tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mindspore as ms


def compile_fn(fn: Callable, jit: bool) -> Callable:
    """`fn` compiled with `mindspore.jit` when `jit`; tuple arguments are passed as mutable (a tuple of tensors
    is otherwise a compile-time constant, and every step would compile again)."""
    if not jit:
        return fn
    compiled = ms.jit(fn)

    def call(*args: Any) -> Any:
        return compiled(*(ms.mutable(tuple(a)) if isinstance(a, (tuple, list)) else a for a in args))

    return call
