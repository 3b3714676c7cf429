"""Exponential moving average of trainable parameters, kept as non-trainable MindSpore parameters."""

from __future__ import annotations

from collections.abc import Iterable

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, ops


class EMA:
    """`shadow = decay * shadow + (1 - decay) * param`, updated after every optimizer step.

    The shadow copies live next to the weights (device memory on Ascend) and are saved in checkpoints under the
    parameter names, so `copy_to(model)` can swap them in for validation and sampling. With `jit` the update is
    one compiled graph (eagerly it is three synchronous launches per parameter on CPU).
    """

    def __init__(self, params: Iterable[Parameter], decay: float, jit: bool = False):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.params = list(params)
        self.names = [p.name for p in self.params]
        self.shadow = [
            Parameter(p.value().copy(), name=f"ema.{p.name}", requires_grad=False) for p in self.params
        ]
        self._update = _compiled_update(self.shadow, self.params, decay) if jit else None

    def update(self) -> None:
        if self._update is not None:
            self._update()
            return
        for shadow, param in zip(self.shadow, self.params, strict=True):
            ops.assign(shadow, shadow * self.decay + param * (1.0 - self.decay))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: shadow.asnumpy() for name, shadow in zip(self.names, self.shadow, strict=True)}

    def load_state_dict(self, arrays: dict[str, np.ndarray]) -> None:
        missing = [n for n in self.names if n not in arrays]
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {missing[:3]}")
        for name, shadow in zip(self.names, self.shadow, strict=True):
            # in place: a compiled update keeps the buffers it was compiled with
            ops.assign(shadow, Tensor(np.asarray(arrays[name]).reshape(shadow.shape), shadow.dtype))

    def copy_to(self, params: Iterable[Parameter]) -> None:
        """Overwrite `params` (matched by name) with the averaged values."""
        by_name = dict(zip(self.names, self.shadow, strict=True))
        for param in params:
            param.set_data(by_name[param.name].value().copy())


def _compiled_update(shadows: list[Parameter], params: list[Parameter], decay: float):
    """The EMA update of all shadows as one `mindspore.jit` graph."""
    shadow_tuple, param_tuple = ms.ParameterTuple(shadows), ms.ParameterTuple(params)
    count = len(shadows)

    def update():
        for i in range(count):
            ops.assign(shadow_tuple[i], shadow_tuple[i] * decay + param_tuple[i] * (1.0 - decay))
        return True

    return ms.jit(update)
