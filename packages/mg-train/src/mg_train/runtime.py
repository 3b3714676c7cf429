"""Process-level setup shared by every mg-train command: MindSpore context, precision, device and stop signals."""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import sys
from types import FrameType

import mindspore as ms
import mindspore.runtime


def device() -> str:
    """MindSpore's device target: 'CPU', 'Ascend' or 'GPU'."""
    return ms.get_context("device_target")


def setup_mindspore() -> str:
    """PyNative mode (graph compilation is per step function, via `mindspore.jit`), and on CPU a synchronous
    op launch: with MindSpore's asynchronous launch, small CPU ops spend more time in dispatch threads than in
    the kernels (measured 4-15x slower on 2 cores; results are identical). Returns the device target."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    target = device()
    if target == "CPU":
        ms.runtime.launch_blocking()
    return target


def resolve_precision(precision: str) -> str:
    """'auto' -> 'bf16' on Ascend, 'fp32' elsewhere; a bf16 request off Ascend is an error (no CPU kernel)."""
    if precision == "auto":
        return "bf16" if device() == "Ascend" else "fp32"
    if precision == "bf16" and device() != "Ascend":
        raise ValueError(
            f"train.precision=bf16 needs an Ascend device (MindSpore has no bf16 matmul on {device()}); use fp32"
        )
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"train.precision must be auto, fp32 or bf16, got {precision!r}")
    return precision


def apply_precision(network: ms.nn.Cell, precision: str) -> None:
    """bf16 compute with fp32 master weights on Ascend (MindSpore AMP level O2, norms and softmax in fp32)."""
    if precision == "bf16":
        ms.amp.auto_mixed_precision(network, amp_level="O2", dtype=ms.bfloat16)


class StopRequest:
    """Turns SIGTERM and the first Ctrl-C into a flag the training loop polls, so it can checkpoint and exit.

    A second Ctrl-C interrupts immediately. Use as a context manager around the loop; the previous handlers are
    restored on exit.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopRequest:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: signals stay with the caller
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


class StepDeadline:
    """A per-phase deadline that does not need the Python interpreter to fire: `faulthandler`'s C watchdog
    thread prints every thread's traceback and exits the process with status 1 when `arm()` is not renewed
    within `seconds`. A rank blocked in a collective whose peer hangs (or that holds the GIL in C++) still
    exits, so msrun and the other ranks end too. `seconds=0` turns it off."""

    def __init__(self, seconds: float, label: str):
        self.seconds, self.label = float(seconds), label
        self.armed = False

    def arm(self, phase: str) -> None:
        if self.seconds <= 0:
            return
        faulthandler.dump_traceback_later(self.seconds, repeat=False, file=sys.stderr, exit=True)
        self.armed, self.phase = True, phase

    def disarm(self) -> None:
        if self.armed:
            faulthandler.cancel_dump_traceback_later()
            self.armed = False
