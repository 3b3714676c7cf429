"""Saving and restoring the whole training state (model, optimizer moments, EMA, step counters, data position) in
any parallel layout, without ever holding more than one full tensor: every rank writes and reads its own pieces
(mg-parallel's `sharded`), rank 0 writes the manifest (`checkpoint.CheckpointManager`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mindspore import Parameter, Tensor, nn, ops

import mg_parallel as mp
from mg_parallel.safetensors_io import file_sha256
from mg_parallel.sharded import ShardSpec, write_part
from mg_train.checkpoint import (
    FORMAT,
    VERSION,
    Checkpoint,
    CheckpointError,
    CheckpointManager,
    NonFiniteWeightsError,
    part_folder,
)
from mg_train.optim import OptimizerStep

# (key, spec, read this rank's piece, the tensor to load it into)
Entry = tuple[str, ShardSpec, Callable[[], np.ndarray], Parameter]


def _piece_reader(tensor: Parameter) -> Callable[[], np.ndarray]:
    return lambda: tensor.asnumpy().copy()  # asnumpy can share the buffer the next update writes in place


def state_entries(model: nn.Cell, stepper: OptimizerStep) -> dict[str, list[Entry]]:
    """Everything a checkpoint holds, by group: the model's parameters, the optimizer's state, the EMA shadows."""
    groups: dict[str, list[Entry]] = {
        "model": [(p.name, ShardSpec.of(p), _piece_reader(p), p) for p in model.get_parameters()]
    }
    optimizer = []
    for key, tensor, layout in stepper.zero.state_tensors():
        spec = ShardSpec.of(layout, dtype=_np_dtype(tensor)) if layout is not None else _replicated(tensor)
        optimizer.append((key, spec, _piece_reader(tensor), tensor))
    groups["optimizer"] = optimizer
    if stepper.ema is not None:
        ema = stepper.ema
        groups["ema"] = [
            (name, ShardSpec.of(param), _piece_reader(shadow), shadow)
            for name, shadow, param in zip(ema.names, ema.shadow, ema.params, strict=True)
        ]
    return groups


def _np_dtype(tensor: Parameter) -> np.dtype:
    import mindspore as ms

    return np.dtype(ms.dtype_to_nptype(tensor.dtype))


def _replicated(tensor: Parameter) -> ShardSpec:
    return ShardSpec(tuple(tensor.shape), _np_dtype(tensor).name)


def save_training_checkpoint(
    manager: CheckpointManager,
    step: int,
    model: nn.Cell,
    stepper: OptimizerStep,
    ctx: mp.ParallelContext,
    state: dict[str, Any],
    model_info: dict[str, Any] | None = None,
) -> Path | None:
    """Every rank writes its pieces into the step's partial folder; once all are in place and finite, rank 0
    writes the manifest and makes the folder the checkpoint. Returns its path (on every rank)."""
    rank, world = ctx.rank_id, ctx.world_size
    groups = state_entries(model, stepper)
    if rank == 0:
        manager.begin(step)
    _barrier(ctx)
    folder = manager.partial(step) / part_folder(rank)
    folder.mkdir(parents=True, exist_ok=True)
    files, finite = {}, True
    for group, entries in groups.items():
        info = write_part(folder / f"{group}.safetensors", [e[:3] for e in entries], ctx.layout, rank)
        files[group] = {"file": f"{part_folder(rank)}/{group}.safetensors", "sha256": info["sha256"]}
        finite = finite and info["finite"]
    (folder / "part.json").write_text(json.dumps({"rank": rank, "files": files, "finite": finite}))
    everywhere_finite = _all_true(finite, ctx)
    if rank == 0:
        if everywhere_finite:
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "run_id": manager.run_id,
                "step": step,
                "world_size": world,
                "layout": {axis: ctx.size(axis) for axis in ("dp", "cp", "sp", "tp")},
                "zero_stage": stepper.zero.stage,
                "model": model_info or {},
                "tensors": {
                    g: {k: spec.to_json() for k, spec, _, _ in entries} for g, entries in groups.items()
                },
                "parts": _collect_parts(manager.partial(step), world),
            }
            manager.finalize(step, manifest, {**state, "optimizer_step": stepper.state_dict()})
        else:
            manager.abandon(step)
    _barrier(ctx)  # every rank returns once the checkpoint is complete (or abandoned)
    if not everywhere_finite:
        raise NonFiniteWeightsError(
            f"refusing to save step {step}: non-finite values in the model, optimizer or EMA state"
        )
    return manager.final(step)


def _collect_parts(folder: Path, world: int) -> dict[str, Any]:
    parts = {}
    for rank in range(world):
        info_file = folder / part_folder(rank) / "part.json"
        if not info_file.is_file():
            raise RuntimeError(f"{info_file}: rank {rank} wrote no part; the checkpoint is not complete")
        parts[str(rank)] = json.loads(info_file.read_text())["files"]
    return parts


def restore_training_checkpoint(
    path: str | Path, model: nn.Cell, stepper: OptimizerStep, ctx: mp.ParallelContext
) -> dict[str, Any]:
    """Load a checkpoint (any saved layout; resharded as needed) into this rank's pieces; returns its state."""
    checkpoint = Checkpoint.open(path)
    groups = state_entries(model, stepper)
    if stepper.ema is not None and "ema" not in checkpoint.specs:
        raise ValueError(f"{path} has no EMA weights but optim.ema_decay is set")
    for group, entries in groups.items():
        keys = {key for key, _, _, _ in entries}
        saved = set(checkpoint.specs.get(group, {}))
        saved -= {k for k in saved if group == "optimizer" and k.startswith(LEGACY_OPTIMIZER_STATE)}
        if keys != saved:
            raise ValueError(
                f"{path}: the {group} state does not match this run: missing {sorted(keys - saved)[:10]}, "
                f"unexpected {sorted(saved - keys)[:10]}"
            )
        with checkpoint.reader(group) as reader:
            for key, spec, _, tensor in entries:
                piece = Tensor(
                    reader.local(key, spec, ctx.layout, ctx.rank_id).reshape(tensor.shape), tensor.dtype
                )
                if tensor.has_init:  # built lazily, never materialised: this is its first value
                    tensor.set_data(piece)
                else:
                    ops.assign(tensor, piece)  # in place: compiled updates (EMA, AdamW) keep their buffers
    stepper.zero.sync_shards_from_model()
    stepper.load_state_dict(checkpoint.state.get("optimizer_step", {}))
    return checkpoint.state


# mg-train 0.4's optimizer (mindspore.experimental AdamW) also saved an unused AMSGrad buffer and group LRs.
LEGACY_OPTIMIZER_STATE = ("max_exp_avg_sq.", "lr")


def checkpoint_problem(path: Path, rank: int = 0, world: int = 1) -> str | None:
    """Why `path` cannot be resumed from, or None: its manifest and state must parse and list existing files,
    and the files of this rank's share (every `world`-th, from `rank`) must match their SHA-256."""
    try:
        opened = Checkpoint.open(path)
    except (CheckpointError, OSError, ValueError, KeyError, TypeError) as exc:
        return str(exc)
    entries = sorted(
        (entry["file"], entry["sha256"])
        for files in opened.manifest.get("parts", {}).values()
        for entry in files.values()
    )
    for index, (file, sha256) in enumerate(entries):
        if index % world == rank and file_sha256(path / file) != sha256:
            return f"{path / file} does not match the SHA-256 its manifest records (the file is damaged)"
    return None


def resolve_resume(
    resume: str | None, manager: CheckpointManager, ctx: mp.ParallelContext | None = None
) -> Path | None:
    """The checkpoint to continue from: `auto` = the newest intact one in the run (or none), a path, or None.

    Every candidate is checked before use (`checkpoint_problem`, the ranks sharing the hashing): under `auto` a
    damaged newest checkpoint is skipped with a warning for the previous one; a damaged explicit one is an
    error."""
    if resume is None:
        return None
    rank, world = (ctx.rank_id, ctx.world_size) if ctx is not None else (0, 1)

    def intact(path: Path) -> tuple[bool, str | None]:
        problem = checkpoint_problem(path, rank, world)
        ok = _all_true(problem is None, ctx) if ctx is not None else problem is None
        return ok, problem

    if resume == "auto":
        candidates = list(reversed(manager.list()))
        for path in candidates:
            ok, problem = intact(path)
            if ok:
                return path
            if rank == 0 or problem:
                print(
                    f"resume: skipping {path}: {problem or 'a file another rank checked is damaged'}; trying the "
                    "previous checkpoint",
                    file=sys.stderr,
                    flush=True,
                )
        if candidates:
            raise CheckpointError(
                f"train.resume=auto: none of the {len(candidates)} checkpoints in {manager.directory} is intact "
                "(see above); move them away, or start over with train.resume=null train.new_run_in_used_folder=true"
            )
        return None
    path = Path(resume)
    if not (path / "state.json").is_file():
        latest = CheckpointManager(path / "checkpoints").latest() if path.is_dir() else None
        if latest is None:
            raise FileNotFoundError(
                f"train.resume={resume}: not a checkpoint or a run directory with checkpoints"
            )
        path = latest
    ok, problem = intact(path)
    if not ok:
        raise CheckpointError(f"train.resume={resume}: {problem or 'a file another rank checked is damaged'}")
    return path


def _barrier(ctx: mp.ParallelContext) -> None:
    if ctx.world_group.size > 1:
        mp.all_reduce(Tensor(np.zeros(1, np.float32)), ctx.world_group).asnumpy()


def _all_true(flag: bool, ctx: mp.ParallelContext) -> bool:
    if ctx.world_group.size == 1:
        return flag
    bad = mp.all_reduce(Tensor(np.array([0.0 if flag else 1.0], np.float32)), ctx.world_group)
    return float(bad.asnumpy()[0]) == 0.0


def full_weights(checkpoint: Checkpoint, names: Sequence[str] | None = None, ema: bool = True):
    """(specs, read): the model's full tensors of a checkpoint, EMA weights for the parameters EMA tracks when
    `ema` and the checkpoint has them; `read(name)` rebuilds one tensor (for streaming an export)."""
    model_specs = checkpoint.specs["model"]
    names = list(names) if names is not None else list(model_specs)
    readers = {"model": checkpoint.reader("model")}
    use_ema = ema and "ema" in checkpoint.specs
    if use_ema:
        readers["ema"] = checkpoint.reader("ema")

    def read(name: str) -> np.ndarray:
        if use_ema and name in checkpoint.specs["ema"]:
            return readers["ema"].full(name)
        return readers["model"].full(name)

    specs = [(name, model_specs[name]) for name in names]
    return specs, read, lambda: [r.close() for r in readers.values()]
