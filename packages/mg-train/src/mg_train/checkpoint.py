"""Training checkpoints on disk: one folder per step, one part per rank, a manifest that makes it complete.

```
checkpoints/step_00000500/
  manifest.json          format, step, layout (dp, cp, sp, tp), world size, ZeRO stage, model kind and config,
                         every tensor's ShardSpec per group, every part's files with SHA-256
  state.json             step, schedule, sampler position, ... (JSON of the run)
  rank_00000/model.safetensors, optimizer.safetensors, ema.safetensors   this rank's pieces
  rank_00001/...
```
Every rank writes its own pieces (mg-parallel's `write_part`: one tensor at a time, each piece once per replica
set) into `.step_00000500.partial/`; rank 0 then checks every part, writes the manifest and renames the folder
into place, so a save that crashes on any rank never becomes a checkpoint. A checkpoint loads into any layout
(`Checkpoint.reader`: pieces read as they are when the cut is the same, rebuilt and re-cut otherwise).
Checkpoints of mg-train 0.4 (one file per group holding full tensors, no manifest) still load.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mg_data.atomic import fsync_path, remove_dead_temporaries, write_text
from mg_parallel.groups import ParallelLayout
from mg_parallel.safetensors_io import file_sha256, read_specs
from mg_parallel.sharded import PartReader, ShardSpec

MANIFEST = "manifest.json"
STATE_FILE = "state.json"
PREFIX = "step_"
FORMAT = "mg-train-checkpoint"
VERSION = 2
GROUPS = ("model", "optimizer", "ema")


class NonFiniteWeightsError(RuntimeError):
    """Raised instead of saving weights that contain NaN or inf."""


class CheckpointError(RuntimeError):
    """A checkpoint folder is incomplete or damaged; the message names the file."""


def part_folder(rank: int) -> str:
    return f"rank_{rank:05d}"


class CheckpointManager:
    """The step checkpoints under `directory`: where a save writes, which ones are complete, pruning."""

    def __init__(self, directory: str | Path, keep_last: int = 3, run_id: str | None = None):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.run_id = run_id  # set: only this run's checkpoints are listed, resumed and pruned

    def final(self, step: int) -> Path:
        return self.directory / f"{PREFIX}{step:08d}"

    def partial(self, step: int) -> Path:
        return self.directory / f".{PREFIX}{step:08d}.partial"

    def begin(self, step: int) -> Path:
        """(Rank 0) a fresh partial folder for `step`; leftovers of an earlier attempt are removed."""
        folder = self.partial(step)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        return folder

    def finalize(self, step: int, manifest: Mapping[str, Any], state: Mapping[str, Any]) -> Path:
        """(Rank 0, after every part is written) write state and manifest, then make the folder the checkpoint
        of `step` in one rename (an older checkpoint of the same step is swapped out), and prune."""
        folder = self.partial(step)
        write_text(folder / STATE_FILE, json.dumps({"step": step, **state}, indent=1, default=_json_default))
        write_text(folder / MANIFEST, json.dumps(manifest, indent=1, default=_json_default))
        fsync_path(folder)
        final = self.final(step)
        if final.exists():  # re-saving a step (e.g. after a resume)
            old = self.directory / f".{final.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            folder.rename(final)
            shutil.rmtree(old)
        else:
            folder.rename(final)
        fsync_path(self.directory)
        self._prune()
        return final

    def remove_leftovers(self) -> list[Path]:
        """(Rank 0, before a run writes anything) partial and swapped-out step folders of writers that died
        mid-save, and their temporaries; returns what was removed.

        A re-save of an existing step swaps folders in two renames (`finalize`); a crash between them leaves
        the step with no folder, only `.old` and `.partial`. Such a step is restored first: the finished new
        save (manifest written) if there is one, else the old checkpoint.
        """
        if not self.directory.is_dir():
            return []
        removed = remove_dead_temporaries(self.directory)
        self._restore_swapped_steps()
        for path in sorted(self.directory.iterdir()):
            if (
                path.is_dir()
                and path.name.startswith(f".{PREFIX}")
                and path.name.endswith((".partial", ".old"))
            ):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def _restore_swapped_steps(self) -> None:
        for old in sorted(self.directory.glob(f".{PREFIX}*.old")):
            final = self.directory / old.name[1 : -len(".old")]
            if final.exists():
                continue
            partial = self.directory / f".{final.name}.partial"
            source = partial if (partial / MANIFEST).is_file() else old
            source.rename(final)
            fsync_path(self.directory)

    def abandon(self, step: int) -> None:
        shutil.rmtree(self.partial(step), ignore_errors=True)

    def list(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
        mine = [
            p for p in found if is_checkpoint(p) and (self.run_id is None or run_of(p) in (None, self.run_id))
        ]
        return sorted(mine, key=lambda p: int(p.name[len(PREFIX) :]))

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1] if found else None

    def _prune(self) -> None:
        for path in self.list()[: -self.keep_last]:
            shutil.rmtree(path)


def run_of(path: Path) -> str | None:
    """The run id a checkpoint's manifest records (None: saved before runs had ids, or unreadable)."""
    try:
        return json.loads((path / MANIFEST).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def is_checkpoint(path: Path) -> bool:
    """A complete checkpoint: a manifest (or, from mg-train 0.4, state.json beside model.safetensors)."""
    return (path / MANIFEST).is_file() or (
        (path / STATE_FILE).is_file() and (path / "model.safetensors").is_file()
    )


@dataclass
class Checkpoint:
    """A complete checkpoint folder, opened: its state, saved layout and tensors' specs per group."""

    path: Path
    state: dict[str, Any]
    layout: ParallelLayout
    specs: dict[str, dict[str, ShardSpec]]  # group -> key -> spec
    parts: dict[str, dict[int, Path]]  # group -> saved rank -> file
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> Checkpoint:
        path = Path(path)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a checkpoint: {STATE_FILE} is missing")
        state = json.loads((path / STATE_FILE).read_text())
        if not (path / MANIFEST).is_file():  # mg-train 0.4: full tensors, one file per group
            parts = {f.stem: {0: f} for f in sorted(path.glob("*.safetensors"))}
            specs = {
                group: {s.name: ShardSpec(s.shape, np.dtype(s.dtype).name) for s in read_specs(files[0])}
                for group, files in parts.items()
            }
            return cls(path, state, ParallelLayout(), specs, parts, {"version": 1})
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise CheckpointError(f"{path / MANIFEST}: not an mg-train checkpoint manifest")
        layout = ParallelLayout(**manifest["layout"])
        specs = {
            group: {key: ShardSpec.from_json(spec) for key, spec in tensors.items()}
            for group, tensors in manifest["tensors"].items()
        }
        parts: dict[str, dict[int, Path]] = {group: {} for group in specs}
        for rank, files in manifest["parts"].items():
            for group, entry in files.items():
                file = path / entry["file"]
                if not file.is_file():
                    raise CheckpointError(f"{file}: listed in {path / MANIFEST} but missing")
                parts[group][int(rank)] = file
        return cls(path, state, layout, specs, parts, manifest)

    @property
    def groups(self) -> list[str]:
        return [group for group in GROUPS if group in self.specs] + [g for g in self.specs if g not in GROUPS]

    def reader(self, group: str) -> PartReader:
        if group not in self.specs:
            raise CheckpointError(f"{self.path}: no {group} tensors (has {self.groups})")
        return PartReader(self.parts[group], self.specs[group], self.layout)

    def verify(self) -> None:
        """Recompute every part file's SHA-256 against the manifest (whole files are read)."""
        for rank, files in self.manifest.get("parts", {}).items():
            for group, entry in files.items():
                got = file_sha256(self.path / entry["file"])
                if got != entry["sha256"]:
                    raise CheckpointError(
                        f"{self.path / entry['file']}: SHA-256 {got[:12]}... differs from the manifest's "
                        f"{entry['sha256'][:12]}... (rank {rank}, {group}): the file is damaged"
                    )


def load_checkpoint(path: str | Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Every group's full tensors and the state of one checkpoint (for small models and tests: a large
    model's tensors are better read one at a time through `Checkpoint.open(path).reader(group)`)."""
    checkpoint = Checkpoint.open(path)
    arrays = {}
    for group in checkpoint.groups:
        with checkpoint.reader(group) as reader:
            arrays[group] = {key: reader.full(key) for key in checkpoint.specs[group]}
    return arrays, checkpoint.state


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint state")
