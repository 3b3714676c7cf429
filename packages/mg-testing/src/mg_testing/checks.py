"""The model checks: save/load round trip, jit == PyNative, gradient checkpointing == plain, bad inputs rejected.

Each check is a plain function that returns quietly when the model passes and raises AssertionError with a message
naming the parameter, output or input case at fault and by how much it is off. No pytest needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import mindspore as ms

from mg_testing.compare import EXACT, Tolerance, _join, compare, describe, difference
from mg_testing.gradients import (
    GRAD_TOL,
    LOSS_TOL,
    OUTPUT_TOL,
    Gradients,
    assert_gradients_close,
    call,
    explain_jit_errors,
    loss_and_grads,
    mean_square,
)

# ----------------------------------------------------------------------------------------------------------------
# Save / load


def _save_pretrained(model, folder):
    model.save_pretrained(folder)


def _parameters(model) -> dict[str, Any]:
    return dict(model.parameters_and_names())


def _config_of(model):
    return getattr(model, "config", None)


def _as_dict(config) -> dict | None:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if callable(getattr(config, "to_dict", None)):
        return config.to_dict()
    return dict(config) if isinstance(config, Mapping) else None


def _config_differences(got, want) -> str:
    a, b = _as_dict(got), _as_dict(want)
    if a is None or b is None:
        return f"config after loading {got!r} != saved {want!r}"
    absent = "<absent>"
    fields = sorted(k for k in a.keys() | b.keys() if a.get(k, absent) != b.get(k, absent))
    shown = ", ".join(f"{k}: {a.get(k, absent)!r} after loading, {b.get(k, absent)!r} saved" for k in fields)
    return f"config differs ({shown or 'the objects compare unequal'})"


def check_save_load_round_trip(
    model,
    inputs: Sequence[Any] = (),
    *,
    folder: str | Path | None = None,
    save: Callable[[Any, Path], None] | None = None,
    load: Callable[[Path], Any] | None = None,
    forward: Callable = call,
    param_tol: Tolerance = EXACT,
    output_tol: Tolerance = EXACT,
):
    """Save `model`, load it back and check that nothing was lost; returns the loaded model.

    `save(model, folder)` / `load(folder)` default to the diffusers-style `model.save_pretrained(folder)` /
    `type(model).from_pretrained(folder)`. `folder` defaults to a temporary directory that is removed afterwards;
    give one (e.g. pytest's `tmp_path / "ckpt"`) to inspect the files after the check.

    Checked, each with a message that names what differs:
    - the loaded object is a new model (a `load` that returns its argument would prove nothing);
    - the same parameter names (missing and unexpected ones listed), and per parameter the same shape, dtype and
      values (exactly, unless `param_tol`): a parameter that `save` forgets keeps its fresh initialisation;
    - the same `config` attribute, if the model has one (differing fields listed): a checkpoint whose config
      loses a constructor argument builds another model;
    - the same outputs of `forward(model, *inputs)` (default `model(*inputs)`; exactly, unless `output_tol`):
      catches state that is not a parameter (buffers, Python attributes) and load-time transformations.
    Give `inputs` whose outputs depend on every parameter (random weights, not zero-initialised layers), or the
    output comparison proves little; the parameter comparison does not depend on them.
    """
    save = save or _save_pretrained
    load = load or type(model).from_pretrained
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="mg-testing-"))
        folder = Path(folder)
        save(model, folder)
        loaded = load(folder)
    if loaded is model:
        raise AssertionError("load returned the saved model object itself: the round trip proves nothing")

    failures = []
    want, got = _parameters(model), _parameters(loaded)
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        failures.append(f"parameters after loading: missing {missing}, unexpected {extra}")
    for name, param in want.items():
        if name not in got:
            continue
        other = got[name]
        if tuple(other.shape) != tuple(param.shape) or other.dtype != param.dtype:
            failures.append(
                f"parameter {name}: {other.dtype}{tuple(other.shape)} after loading, {param.dtype}"
                f"{tuple(param.shape)} saved"
            )
            continue
        message = difference(other, param, param_tol, f"parameter {name}")
        if message:
            failures.append(message)
    config, loaded_config = _config_of(model), _config_of(loaded)
    if config is not None and loaded_config != config:
        failures.append(_config_differences(loaded_config, config))
    if inputs:
        failures += compare(forward(loaded, *inputs), forward(model, *inputs), output_tol, "output")
    if failures:
        raise AssertionError(f"save/load round trip through {folder}:\n" + _join(failures))
    return loaded


# ----------------------------------------------------------------------------------------------------------------
# jit == PyNative


def check_jit_matches_pynative(
    model,
    inputs: Sequence[Any],
    *,
    forward: Callable = call,
    grads: bool = True,
    loss: Callable = mean_square,
    grad_inputs: Sequence[int] = (),
    output_tol: Tolerance = OUTPUT_TOL,
    loss_tol: Tolerance = LOSS_TOL,
    grad_tol: Tolerance = GRAD_TOL,
) -> tuple[Gradients, Gradients] | None:
    """`forward(model, *inputs)` gives the same outputs under `mindspore.jit` as in PyNative and, when `grads`,
    the same `loss(outputs)` and gradients with respect to every trainable parameter and to the inputs at
    positions `grad_inputs`. Returns the (PyNative, jit) `Gradients`, or None when `grads` is False.

    Why: training runs compiled, debugging and most tests run eagerly. The two paths diverge when a model
    branches in Python on state that changes between calls (jit bakes in the branch it saw when compiling),
    mutates tensors in place, or uses an op whose kernels or backward differ by mode.

    With `grads`, each mode runs one forward + backward (`loss_and_grads`: the outputs compared come from that
    pass, so jit compiles once); without, one forward each. PyNative always runs first, so in a fresh process
    the eager gradients are computed before anything else has run. That matters: MindSpore 2.10 PyNative
    differentiated a softmax over a single key (after another softmax) wrongly, but only in a process where no
    earlier backward had run, so the bug hid in a test suite. Run the check through `run_in_fresh_process` when a
    model has such a path (or compute each mode's `loss_and_grads` in a process of its own and compare them with
    `assert_gradients_close`).

    The tolerances default to float32 rounding (graph mode fuses and reorders sums): outputs rtol 1e-5 plus
    1e-5 of the largest value, loss rtol 1e-5, gradients rtol 1e-4 plus 1e-5 of the largest value. Keep the
    model and inputs deterministic (seeded) and small; under jit `forward` and `loss` are compiled from source
    (use `def` functions or lambdas on a line of their own).
    """
    if grads:
        kwargs = dict(loss=loss, forward=forward, grad_inputs=grad_inputs)
        pynative = loss_and_grads(model, inputs, **kwargs)
        jitted = loss_and_grads(model, inputs, jit=True, **kwargs)
        eager, graph = pynative.outputs, jitted.outputs
    else:
        eager = forward(model, *inputs)
        graph = _jit_forward(model, inputs, forward)
    failures = compare(graph, eager, output_tol, "output")
    if failures:
        raise AssertionError("jit forward differs from PyNative:\n" + _join(failures))
    if not grads:
        return None
    assert_gradients_close(
        jitted, pynative, loss_tol=loss_tol, grad_tol=grad_tol, context="jit gradients differ from PyNative"
    )
    return pynative, jitted


def _jit_forward(model, inputs, forward):
    def compiled(*args):
        return forward(model, *args)

    with explain_jit_errors():
        return ms.jit(compiled)(*inputs)


# ----------------------------------------------------------------------------------------------------------------
# Gradient checkpointing


# Recompute repeats the same ops on the same values: tighter defaults than jit vs PyNative.
RECOMPUTE_LOSS_TOL = Tolerance(rtol=1e-6)
RECOMPUTE_GRAD_TOL = Tolerance(rtol=1e-5, atol=1e-7)


def _enable_checkpointing(model) -> None:
    model.set_gradient_checkpointing(True)


@contextlib.contextmanager
def _counting_recompute() -> Iterator[list[int]]:
    """Count calls of `mindspore.recompute` (the function models call as `ms.recompute(cell, *args)`)."""
    calls = [0]
    original = ms.recompute

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    ms.recompute = counting
    try:
        yield calls
    finally:
        ms.recompute = original


def check_gradient_checkpointing(
    make_model: Callable[[], Any],
    inputs: Sequence[Any],
    *,
    enable: Callable[[Any], None] = _enable_checkpointing,
    forward: Callable = call,
    loss: Callable = mean_square,
    grad_inputs: Sequence[int] = (),
    jit: bool = False,
    require_recompute: bool = True,
    loss_tol: Tolerance = RECOMPUTE_LOSS_TOL,
    grad_tol: Tolerance = RECOMPUTE_GRAD_TOL,
) -> tuple[Gradients, Gradients]:
    """Gradient checkpointing changes memory, not results: a model with `enable(model)` applied (default
    `model.set_gradient_checkpointing(True)`) gives the same `loss(forward(model, *inputs))` and the same
    gradients (every trainable parameter, plus inputs at `grad_inputs`) as the plain model. Returns the (plain,
    checkpointed) `Gradients`.

    `make_model()` is called twice and must build the same model both times (seed it; set training mode if the
    model only checkpoints while training); the check verifies the two start with equal parameters. The plain
    model always runs in PyNative, the reference; the checkpointed one in PyNative, or under `mindspore.jit`
    when `jit` (graph mode recomputes through its own pass, worth checking separately).

    A recompute path is a second forward pass that the backward replays; it goes wrong when it differs from the
    first (a branch on a flag, dropout without a fixed seed, a layer skipped) or when the switch does nothing. For
    the latter, with `require_recompute` the check counts calls of `mindspore.recompute` in a PyNative forward of
    the checkpointed model and fails if there were none: a check that passes because checkpointing never ran
    proves nothing. Pass `require_recompute=False` for models that checkpoint another way (`Cell.recompute()`).
    Default tolerances: loss rtol 1e-6, gradients rtol 1e-5 plus atol 1e-7 (recompute repeats the same ops).
    """
    plain, checkpointed = make_model(), make_model()
    first, second = _parameters(plain), _parameters(checkpointed)
    failures = (
        [] if list(first) == list(second) else [f"parameter names differ: {list(first)} vs {list(second)}"]
    )
    for name in (n for n in first if n in second):
        message = difference(second[name], first[name], EXACT, f"parameter {name}")
        if message:
            failures.append(message)
    if failures:
        raise AssertionError("make_model() built two different models:\n" + _join(failures))

    enable(checkpointed)
    kwargs = dict(loss=loss, forward=forward, grad_inputs=grad_inputs)
    reference = loss_and_grads(plain, inputs, **kwargs)
    with _counting_recompute() as calls:
        if not jit:
            tested = loss_and_grads(checkpointed, inputs, **kwargs)
        elif require_recompute:
            forward(checkpointed, *inputs)  # a PyNative forward, only to see the switch at work
    if require_recompute and not calls[0]:
        raise AssertionError(
            "enable(model) switched on no mindspore.recompute call in the forward pass, so the comparison "
            "would test nothing (is the model in training mode, if it only checkpoints while training? does "
            "it checkpoint with Cell.recompute()? then pass require_recompute=False)"
        )
    if jit:
        tested = loss_and_grads(checkpointed, inputs, jit=True, **kwargs)
    mode = "under jit" if jit else "in PyNative"
    assert_gradients_close(
        tested,
        reference,
        loss_tol=loss_tol,
        grad_tol=grad_tol,
        context=f"gradient checkpointing {mode} differs from the plain model",
    )
    return reference, tested


# ----------------------------------------------------------------------------------------------------------------
# Input errors


def check_rejects_bad_inputs(
    fn: Callable,
    cases: Sequence[tuple[tuple, type[BaseException], str]],
    *,
    valid: tuple | None = None,
) -> None:
    """Each `(args, exception_type, pattern)` in `cases` makes `fn(*args)` raise `exception_type` (or a subclass)
    with a message that `re.search(pattern, message)` finds.

    Why: a model that broadcasts a wrong channel count, reshapes a wrong rank or silently casts a wrong dtype
    runs on and produces garbage far from the cause; a clear early error names it. A case fails when nothing is
    raised, another exception type is raised, or the message does not match; all failing cases are reported
    together, each with a short description of its arguments. `args` is always a tuple of positional arguments
    (wrap keyword arguments in `fn`). With `valid`, `fn(*valid)` must run without error first, so the errors
    come from the bad inputs and not from a call that fails anyway.
    """
    if valid is not None:
        try:
            fn(*valid)
        except Exception as err:
            raise AssertionError(
                f"the valid call {describe(tuple(valid))} raised {type(err).__name__}: {err}"
            ) from err
    failures = []
    for i, case in enumerate(cases):
        args, expected, pattern = case
        if not isinstance(args, tuple):
            raise TypeError(
                f"case {i}: args must be a tuple of positional arguments, got {type(args).__name__}"
            )
        label = f"case {i} {describe(args)}"
        try:
            fn(*args)
        except expected as err:
            if not re.search(pattern, str(err)):
                failures.append(f"{label}: {type(err).__name__} {str(err)!r} does not match {pattern!r}")
        except Exception as err:
            failures.append(f"{label}: raised {type(err).__name__} ({err}), expected {expected.__name__}")
        else:
            failures.append(f"{label}: accepted silently, expected {expected.__name__} matching {pattern!r}")
    if failures:
        raise AssertionError(
            f"{len(failures)} of {len(cases)} bad inputs not rejected as expected:\n" + _join(failures)
        )
