"""Loss and gradients of a model as numpy (PyNative or under mindspore.jit), and their comparison."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import mindspore as ms
import numpy as np

from mg_testing.compare import Tolerance, _join, compare, difference, to_numpy

# Default tolerances for float32 results that differ only in the order of their sums (jit vs PyNative).
OUTPUT_TOL = Tolerance(rtol=1e-5, of_max=1e-5)
LOSS_TOL = Tolerance(rtol=1e-5)
GRAD_TOL = Tolerance(rtol=1e-4, of_max=1e-5)


@dataclasses.dataclass
class Gradients:
    """A loss value and its gradients, as numpy: `inputs[i]` is the gradient with respect to input
    `grad_inputs[i]` (a tuple of arrays for a tuple input), `params` maps each trainable parameter's name (its
    path in the model, as in `parameters_and_names()`) to its gradient, and `outputs` holds the forward outputs
    the loss was computed from (same nesting, tensors as arrays). Picklable, so it can come back from
    `run_in_fresh_process`."""

    loss: float
    inputs: tuple[Any, ...]
    params: dict[str, np.ndarray]
    outputs: Any = None


def call(model, *inputs):
    """The default forward: `model(*inputs)`."""
    return model(*inputs)


def mean_square(outputs):
    """The default loss: the sum over all outputs (a tensor or a tuple/list of tensors) of mean(output ** 2).

    Every output element gets a gradient that depends on its value, so a wrong output also shows as a wrong
    gradient. Give your own loss for outputs of another shape (dicts, dataclasses) or integer outputs.
    """
    if isinstance(outputs, (tuple, list)):
        total = 0.0
        for item in outputs:
            total = total + (item * item).mean()
        return total
    return (outputs * outputs).mean()


def named_trainable_params(model) -> list[tuple[str, ms.Parameter]]:
    """(path, parameter) for every trainable parameter, paths as in `model.parameters_and_names()`."""
    return [(name, p) for name, p in model.parameters_and_names() if p.requires_grad]


def loss_and_grads(
    model,
    inputs: Sequence[Any],
    *,
    loss: Callable = mean_square,
    forward: Callable = call,
    grad_inputs: Sequence[int] = (),
    jit: bool = False,
) -> Gradients:
    """`loss(forward(model, *inputs))` and its gradients with respect to every trainable parameter of `model` and
    to the inputs at positions `grad_inputs`, through `mindspore.value_and_grad`; under `mindspore.jit` when
    `jit`. The forward outputs come back too (as the auxiliary output of the same graph: one compilation).

    Under jit MindSpore compiles `forward` and `loss` from their source: pass `def` functions or lambdas assigned
    on a line of their own (MindSpore's parser cannot find a lambda written inside a call's arguments).
    """
    named = named_trainable_params(model)
    params = [p for _, p in named]
    positions = tuple(grad_inputs)
    if not params and not positions:
        raise ValueError("nothing to differentiate: the model has no trainable parameters and grad_inputs=()")

    def objective(*args):
        outputs = forward(model, *args)
        return loss(outputs), outputs

    fn = ms.value_and_grad(objective, grad_position=positions or None, weights=params or None, has_aux=True)
    if jit:
        fn = ms.jit(fn)
    with explain_jit_errors():
        (value, outputs), grads = fn(*inputs)
    if positions and params:
        input_grads, param_grads = grads
    elif positions:
        input_grads, param_grads = grads, ()
    else:
        input_grads, param_grads = (), grads
    if len(positions) == 1:
        input_grads = (input_grads,)
    return Gradients(
        loss=float(to_numpy(value)),
        inputs=tuple(_tree_numpy(g) for g in input_grads),
        params={name: to_numpy(g) for (name, _), g in zip(named, param_grads, strict=True)},
        outputs=_tree_numpy(outputs),
    )


@contextlib.contextmanager
def explain_jit_errors():
    """Turn MindSpore's error for a lambda it cannot compile into one that says what to do."""
    try:
        yield
    except TypeError as err:
        if "Parse Lambda Function Fail" in str(err):
            raise TypeError(
                "mindspore.jit cannot parse a lambda written inside a call's arguments: define `forward` / `loss` "
                "with def, or assign the lambda to a name on a line of its own"
            ) from err
        raise


def _tree_numpy(value):
    if isinstance(value, (tuple, list)):
        return tuple(_tree_numpy(v) for v in value)
    return value if value is None else to_numpy(value)


def gradient_differences(
    actual: Gradients,
    expected: Gradients,
    *,
    loss_tol: Tolerance = LOSS_TOL,
    grad_tol: Tolerance = GRAD_TOL,
) -> list[str]:
    """Every difference between two `Gradients` (empty when they agree); see `assert_gradients_close`."""
    failures = []
    message = difference(actual.loss, expected.loss, loss_tol, "loss")
    if message:
        failures.append(message)
    if len(actual.inputs) != len(expected.inputs):
        failures.append(f"{len(actual.inputs)} input gradients vs expected {len(expected.inputs)}")
    else:
        for i, (a, e) in enumerate(zip(actual.inputs, expected.inputs, strict=True)):
            failures += compare(a, e, grad_tol, f"gradient of input {i}")
    missing = sorted(set(expected.params) - set(actual.params))
    extra = sorted(set(actual.params) - set(expected.params))
    if missing or extra:
        failures.append(f"parameter gradients: missing {missing}, unexpected {extra}")
    scale = None
    if grad_tol.across_parameters and expected.params:
        scale = max(float(np.abs(g).max()) if g.size else 0.0 for g in expected.params.values())
    for name in expected.params:
        if name in actual.params:
            message = difference(
                actual.params[name], expected.params[name], grad_tol, f"gradient of {name}", scale
            )
            if message:
                failures.append(message)
    return failures


def assert_gradients_close(
    actual: Gradients,
    expected: Gradients,
    *,
    loss_tol: Tolerance = LOSS_TOL,
    grad_tol: Tolerance = GRAD_TOL,
    context: str = "",
) -> None:
    """Raise AssertionError unless the losses agree within `loss_tol` and every input and parameter gradient
    within `grad_tol` (same parameter names on both sides). The message lists every differing gradient by name
    with its largest difference, prefixed by `context`."""
    failures = gradient_differences(actual, expected, loss_tol=loss_tol, grad_tol=grad_tol)
    if failures:
        head = f"{context}: " if context else ""
        raise AssertionError(head + f"{len(failures)} mismatch(es)\n" + _join(failures))
