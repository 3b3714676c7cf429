"""Saving and restoring the whole training state (model, optimizer moments, EMA, step counters, data position) in
any parallel layout: every rank takes part in gathering, rank 0 writes one plain checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mindspore import Tensor, nn, ops

import mg_parallel as mp
from mg_parallel.checkpoint import shard_like, unshard
from mg_train.checkpoint import CheckpointManager, load_checkpoint
from mg_train.ema import EMA
from mg_train.optim import OptimizerStep


def save_training_checkpoint(
    manager: CheckpointManager,
    step: int,
    model: nn.Cell,
    stepper: OptimizerStep,
    ctx: mp.ParallelContext,
    state: dict[str, Any],
) -> Path | None:
    """Gather the full model and optimizer state (every rank takes part) and write them on rank 0."""
    arrays = {
        "model": mp.gather_full_state(model, ctx),
        "optimizer": stepper.zero.optimizer_state_dict(),
    }
    if stepper.ema is not None:
        arrays["ema"] = ema_full_state(stepper.ema, ctx)
    if ctx.rank_id != 0:
        return None
    return manager.save(step, arrays, {**state, "optimizer_step": stepper.state_dict()})


def restore_training_checkpoint(
    path: str | Path, model: nn.Cell, stepper: OptimizerStep, ctx: mp.ParallelContext
) -> dict[str, Any]:
    """Load a checkpoint written by `save_training_checkpoint` (any parallel layout) and return its state."""
    arrays, state = load_checkpoint(path)
    mp.load_full_state(model, arrays["model"], ctx, strict=True, source=f"{path}/model.safetensors")
    stepper.zero.load_optimizer_state_dict(arrays["optimizer"], source=f"{path}/optimizer.safetensors")
    stepper.zero.sync_shards_from_model()
    if stepper.ema is not None:
        if "ema" not in arrays:
            raise ValueError(f"{path} has no EMA weights but optim.ema_decay is set")
        load_ema_full_state(stepper.ema, arrays["ema"], ctx, source=f"{path}/ema.safetensors")
    stepper.load_state_dict(state.get("optimizer_step", {}))
    return state


def ema_full_state(ema: EMA, ctx: mp.ParallelContext) -> dict[str, np.ndarray]:
    """The EMA weights at the model's full shapes (under ZeRO-3 the shadows are chunks like their parameters;
    every rank takes part in the gather)."""
    return {
        name: unshard(shadow.value(), param, ctx)
        for name, shadow, param in zip(ema.names, ema.shadow, ema.params, strict=True)
    }


def load_ema_full_state(
    ema: EMA, arrays: dict[str, np.ndarray], ctx: mp.ParallelContext, source: str = "EMA state"
) -> None:
    """Load full-shape EMA weights (from `ema_full_state`, any layout) into this rank's shadows."""
    missing = [name for name in ema.names if name not in arrays]
    if missing:
        raise ValueError(f"{source}: lacks {len(missing)} parameters, e.g. {missing[:3]}")
    for name, shadow, param in zip(ema.names, ema.shadow, ema.params, strict=True):
        piece = shard_like(np.asarray(arrays[name]), param, ctx)
        ops.assign(
            shadow, Tensor(piece.reshape(shadow.shape), shadow.dtype)
        )  # in place (compiled EMA updates)


def resolve_resume(resume: str | None, manager: CheckpointManager) -> Path | None:
    """The checkpoint to continue from: `auto` = the latest in the run (or none), a path, or None."""
    if resume is None:
        return None
    if resume == "auto":
        return manager.latest()
    path = Path(resume)
    if not (path / "state.json").is_file():
        latest = CheckpointManager(path / "checkpoints").latest() if path.is_dir() else None
        if latest is None:
            raise FileNotFoundError(
                f"train.resume={resume}: not a checkpoint or a run directory with checkpoints"
            )
        return latest
    return path
