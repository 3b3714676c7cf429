"""Detection of slow convolution configurations on CPU.

On AVX-512 CPUs MindSpore's oneDNN picks a reference convolution kernel (~0.5 GFLOP/s) unless the environment
variable ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) caps the ISA at AVX2 before the first oneDNN primitive runs,
which in turn slows matmul. mg-tae's default CPU path (`conv_backend="matmul_autograd"`) avoids native convolutions
altogether, so it needs no environment change; this module warns when a model is built with native
convolutions on CPU without that setting.
"""

from __future__ import annotations

import os
import warnings

import mindspore as ms

FAST_CONV_ISAS = ("AVX2", "AVX", "SSE41")


def onednn_isa_cap() -> str | None:
    """The ISA cap oneDNN reads at start-up, or None when unset."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.upper() if value else None


def slow_convolution_reason(backend: str) -> str | None:
    """Why convolutions of this backend will be slow here, or None when they will not."""
    if backend != "native" or ms.get_context("device_target") != "CPU":
        return None
    cap = onednn_isa_cap()
    if cap is not None and cap.startswith(FAST_CONV_ISAS):
        return None
    return (
        "conv_backend='native' on CPU uses MindSpore's oneDNN reference convolution (~0.5 GFLOP/s, 100x slower "
        "than mg-tae's default); use conv_backend='matmul_autograd' (or 'auto'), or export ONEDNN_MAX_CPU_ISA=AVX2 "
        "before starting Python (this also slows matmul)"
    )


def warn_if_slow_convolution(backend: str) -> None:
    reason = slow_convolution_reason(backend)
    if reason is not None:
        warnings.warn(f"mg-tae: {reason}", RuntimeWarning, stacklevel=3)


ASYNC_LAUNCH_ENV = "MG_TAE_ASYNC_LAUNCH"


def prefer_synchronous_launch() -> bool:
    """On CPU in PyNative mode, switch MindSpore to synchronous op launch (`mindspore.runtime.launch_blocking()`)
    unless $MG_TAE_ASYNC_LAUNCH=1. The TAE runs thousands of small ops per clip; with MindSpore's default
    asynchronous launch their dispatch threads cost more than the ops (SD3.5-sized encode+decode of 16x128x128:
    34.5 s asynchronous vs 22.3 s synchronous, issue 23), and a user calling `encode`/`decode` should get the fast
    one without knowing the setting. It is process-wide (MindSpore has no per-model switch) and what mg-train sets
    for all its commands. Returns whether launch is synchronous now."""
    from mindspore._c_expression import RuntimeConf

    conf = RuntimeConf.get_instance()
    if conf.is_launch_blocking():
        return True
    if os.environ.get(ASYNC_LAUNCH_ENV) == "1":
        return False
    if ms.get_context("device_target") != "CPU" or ms.get_context("mode") != ms.PYNATIVE_MODE:
        return False
    ms.runtime.launch_blocking()
    return True
