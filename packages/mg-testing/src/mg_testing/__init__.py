"""Reusable checks for MindSpore models, written once and shared by the mg packages' tests.

The checks (each raises AssertionError naming the parameter, output or case at fault and the largest difference):
- `check_save_load_round_trip`: parameters, config and outputs survive save + load;
- `check_jit_matches_pynative`: outputs, loss and gradients are the same under `mindspore.jit` and in PyNative;
- `check_gradient_checkpointing`: the checkpointed model gives the plain model's loss and gradients;
- `check_rejects_bad_inputs`: wrong ranks, channel counts, dtypes... raise the expected error and message.
Building blocks: `Tolerance`, `assert_close`, `loss_and_grads` / `Gradients` / `assert_gradients_close`, and
`run_in_fresh_process` for checks that must not share a process with earlier work.
"""

from mg_testing.__about__ import __version__
from mg_testing.checks import (
    check_gradient_checkpointing,
    check_jit_matches_pynative,
    check_rejects_bad_inputs,
    check_save_load_round_trip,
)
from mg_testing.compare import Tolerance, assert_close
from mg_testing.gradients import Gradients, assert_gradients_close, loss_and_grads
from mg_testing.process import run_in_fresh_process

__all__ = [
    "Gradients",
    "Tolerance",
    "__version__",
    "assert_close",
    "assert_gradients_close",
    "check_gradient_checkpointing",
    "check_jit_matches_pynative",
    "check_rejects_bad_inputs",
    "check_save_load_round_trip",
    "loss_and_grads",
    "run_in_fresh_process",
]
