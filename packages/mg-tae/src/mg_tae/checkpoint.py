"""Checkpoints of the TAE: `config.json` + `model.safetensors` (parameter names of the MindSpore cells).

Both files are written into a temporary folder that takes the place of the target folder when complete, so a
crash never leaves a half-written checkpoint, or new weights beside an old config, under the final name.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mindspore import Tensor
from safetensors.numpy import load_file, save_file

from mg_tae._atomic import atomic_dir
from mg_tae.config import TAEConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class LoadReport:
    """What a state-dict load did: names loaded, missing from the file, unexpected in it, and shape mismatches."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        def some(names: list[str]) -> str:
            head = ", ".join(names[:8])
            return head + (f", ... ({len(names)} in all)" if len(names) > 8 else "")

        parts = [f"{len(self.loaded)} loaded"]
        if self.missing:
            parts.append(f"missing: {some(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected: {some(self.unexpected)}")
        if self.mismatched:
            parts.append(f"shape mismatch: {some(self.mismatched)}")
        return "; ".join(parts)


def state_dict(model) -> dict[str, np.ndarray]:
    """Parameter name -> float32 numpy array, names as in the cell tree (e.g. `encoder.conv_in.spatial.weight`)."""
    return {name: param.asnumpy() for name, param in model.parameters_and_names()}


def load_state_dict(
    model, state: dict[str, np.ndarray], strict: bool = True, source: str = "state dict"
) -> LoadReport:
    """Copy arrays into the model's parameters by name; strict loading raises on any missing/unexpected/mismatch."""
    params = dict(model.parameters_and_names())
    report = LoadReport()
    report.unexpected = sorted(set(state) - set(params))
    report.missing = sorted(set(params) - set(state))
    for name, param in params.items():
        if name not in state:
            continue
        value = np.asarray(state[name])
        if tuple(value.shape) != tuple(param.shape):
            report.mismatched.append(f"{name} {tuple(value.shape)} != {tuple(param.shape)}")
    if strict and not report.ok:
        raise ValueError(
            f"{source}: cannot load strictly ({report.summary()}); pass strict=False to load the rest"
        )
    for name, param in params.items():
        if name in state and not any(m.startswith(name + " ") for m in report.mismatched):
            param.set_data(Tensor(np.ascontiguousarray(state[name], dtype=np.float32)))
            report.loaded.append(name)
    if not report.ok:
        warnings.warn(f"{source}: partial load ({report.summary()})", RuntimeWarning, stacklevel=3)
    return report


def write_model_files(
    folder: Path, config: TAEConfig, write_weights: Callable[[Path, dict[str, str]], None]
) -> None:
    """The model-folder format, written into `folder` (a temporary one that becomes the model folder whole):
    the weights through `write_weights(path, metadata)` (a whole state dict in `save_pretrained`, one tensor at
    a time in mg-train's export of a sharded checkpoint), then `config.json`."""
    write_weights(Path(folder) / WEIGHTS_NAME, {"format": "mg-tae"})
    (Path(folder) / CONFIG_NAME).write_text(json.dumps(config.to_dict(), indent=2) + "\n")


def save_pretrained(model, directory) -> None:
    """Write `model.safetensors` and `config.json`; both appear together (a temporary folder takes the place of
    `directory`), so a crash never pairs new weights with an old config. An existing `directory` may hold only
    those two files."""
    state = state_dict(model)
    with atomic_dir(directory, replaces=(WEIGHTS_NAME, CONFIG_NAME)) as tmp:
        write_model_files(
            tmp, model.config, lambda path, metadata: save_file(state, str(path), metadata=metadata)
        )


def from_pretrained(cls, directory, strict: bool = True):
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: missing; a TAE checkpoint directory holds {CONFIG_NAME} and {WEIGHTS_NAME}"
            )
    config = TAEConfig.load(config_path)
    model = cls(config, seed=0)
    try:
        state = load_file(str(weights_path))
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{weights_path}: not a readable safetensors file ({err})") from err
    model.load_state_dict(state, strict=strict, source=str(weights_path))
    return model
