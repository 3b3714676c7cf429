"""Training checkpoints: one directory per step, written atomically, the last K kept.

A checkpoint holds named groups of arrays (model, optimizer, EMA, ...) as safetensors files plus a JSON state
(step, schedule, sampler position, RNG states). It is written into a temporary directory that takes its place
only when complete (mg-data's `atomic_dir`), so an interrupted save never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from mg_data.atomic import atomic_dir

STATE_FILE = "state.json"
PREFIX = "step_"


class NonFiniteWeightsError(RuntimeError):
    """Raised instead of saving weights that contain NaN or inf."""


class CheckpointManager:
    """Save, list, prune and load step checkpoints under `directory`."""

    def __init__(self, directory: str | Path, keep_last: int = 3):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def save(
        self, step: int, arrays: Mapping[str, Mapping[str, np.ndarray]], state: Mapping[str, Any]
    ) -> Path:
        """Write `arrays[group]` to `<group>.safetensors` and `state` to state.json for `step`; prune old ones."""
        for group, tensors in arrays.items():
            bad = [name for name, value in tensors.items() if not np.all(np.isfinite(value))]
            if bad:
                raise NonFiniteWeightsError(
                    f"refusing to save step {step}: non-finite values in {group}: {bad[:5]}"
                )
        final = self.directory / f"{PREFIX}{step:08d}"
        with atomic_dir(final) as tmp:  # re-saving a step (e.g. after a resume) swaps the old one out whole
            for group, tensors in arrays.items():
                save_file(
                    {k: np.ascontiguousarray(v) for k, v in tensors.items()},
                    str(tmp / f"{group}.safetensors"),
                )
            (tmp / STATE_FILE).write_text(
                json.dumps({"step": step, **state}, indent=1, default=_json_default)
            )
        self._prune()
        return final

    def list(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
        return sorted(
            (p for p in found if (p / STATE_FILE).is_file()), key=lambda p: int(p.name[len(PREFIX) :])
        )

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1] if found else None

    def _prune(self) -> None:
        for path in self.list()[: -self.keep_last]:
            shutil.rmtree(path)


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Arrays by group and the JSON state of one checkpoint directory."""
    path = Path(path)
    state_file = path / STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint: {STATE_FILE} is missing")
    arrays = {file.stem: load_file(str(file)) for file in sorted(path.glob("*.safetensors"))}
    return arrays, json.loads(state_file.read_text())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint state")
