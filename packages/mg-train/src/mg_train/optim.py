"""The optimizer side of training: AdamW with its data-parallel / ZeRO wrapper, and the checked optimizer step
(mean over micro-batches and ranks, skip non-finite, clip, scheduled LR, update, EMA).

Works unchanged in one process (world size 1) and under msrun: mg-parallel's `ZeroOptimizer` at stage 0 is plain
data parallel, and with one process its collectives are identities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.experimental.optim import AdamW

import mg_parallel as mp
from mg_train.config.schema import OptimConfig
from mg_train.ema import EMA
from mg_train.schedules import PlateauReducer, learning_rate

# Parameters whose names contain one of these get no weight decay (norm gains, biases, embedding tables).
NO_DECAY_MARKERS = ("norm", "bias", "embed", "table", "gamma", "beta")


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a NaN/inf loss or gradient; the run stops without saving those weights."""


def decay_groups(params: Sequence[Parameter], weight_decay: float) -> list[dict]:
    """AdamW parameter groups: weight decay for matrices, none for norms, biases and embedding tables."""
    decay, no_decay = [], []
    for p in params:
        name = p.name.lower()
        (no_decay if p.ndim <= 1 or any(m in name for m in NO_DECAY_MARKERS) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(
    network: nn.Cell, cfg: OptimConfig, ctx: mp.ParallelContext, zero_stage: int = 0
) -> tuple[mp.ZeroOptimizer, AdamW]:
    """AdamW (with bias correction) over `network`'s trainable parameters, wrapped for data parallel / ZeRO."""
    built: dict[str, AdamW] = {}

    def make(params: list[Parameter]) -> AdamW:
        built["optimizer"] = AdamW(
            decay_groups(params, cfg.weight_decay),
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
        )
        return built["optimizer"]

    zero = mp.ZeroOptimizer(network, make, stage=zero_stage, ctx=ctx, clip_norm=None)
    return zero, built["optimizer"]


def set_learning_rate(optimizer: AdamW, lr: float) -> None:
    """Write `lr` into every group's LR parameter in place.

    `ops.assign`, not `set_data`: AdamW's update is a compiled graph, and when a group holds more than one
    parameter it keeps reading the LR buffer it was compiled with, so `set_data` (which swaps the buffer) left
    the LR at its first value (warmup and cosine schedules silently did nothing after the first step).
    """
    for group in optimizer.param_groups:
        ops.assign(group["lr"], Tensor(lr, ms.float32))


def add_grads(total: tuple | None, grads: Sequence[Tensor]) -> tuple:
    """Running sum of micro-batch gradients."""
    return tuple(grads) if total is None else tuple(a + b for a, b in zip(total, grads, strict=True))


@dataclass
class StepResult:
    applied: bool
    loss: float
    grad_norm: float
    lr: float


class OptimizerStep:
    """Apply summed micro-batch gradients: mean over micro-batches and data-parallel ranks, skip the step if the
    loss or the global gradient norm is not finite (counting consecutive skips), clip, set the scheduled LR,
    update, and update the EMA. The decision is the same on every rank (it uses globally reduced values)."""

    def __init__(
        self,
        zero: mp.ZeroOptimizer,
        optimizer: AdamW,
        cfg: OptimConfig,
        total_steps: int,
        ctx: mp.ParallelContext,
        ema: EMA | None = None,
    ):
        self.zero, self.optimizer, self.cfg, self.total_steps, self.ctx, self.ema = (
            zero,
            optimizer,
            cfg,
            total_steps,
            ctx,
            ema,
        )
        self.plateau = (
            PlateauReducer(
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience,
                min_scale=cfg.plateau_min_lr / cfg.lr if cfg.lr > 0 else 0.0,
            )
            if cfg.plateau_factor
            else None
        )
        self.consecutive_nonfinite = 0
        self.skipped_total = 0

    def lr_at(self, step: int) -> float:
        base = learning_rate(
            step, self.cfg.lr, self.cfg.warmup_steps, self.cfg.schedule, self.total_steps, self.cfg.min_lr
        )
        return base * (self.plateau.scale if self.plateau else 1.0)

    def global_mean(self, value: Tensor) -> float:
        """Mean of a scalar over all ranks (a NaN on any rank makes it NaN everywhere)."""
        world = self.ctx.world_group
        if world.size == 1:
            return float(value.asnumpy())
        total = mp.all_reduce(value.astype(ms.float32).reshape(1), world)
        return float(total.asnumpy()[0]) / world.size

    def __call__(
        self, grad_sum: Sequence[Tensor], loss_sum: Tensor, micro_batches: int, step: int
    ) -> StepResult:
        scale = 1.0 / micro_batches
        grads = tuple(g * scale for g in grad_sum) if micro_batches > 1 else tuple(grad_sum)
        loss = self.global_mean(loss_sum) * scale
        reduced = self.zero.reducer(grads)
        norm_tensor = self.zero.norm(reduced)
        norm = float(norm_tensor.asnumpy())
        lr = self.lr_at(step)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self.consecutive_nonfinite += 1
            self.skipped_total += 1
            return StepResult(False, loss, norm, lr)
        self.consecutive_nonfinite = 0
        set_learning_rate(self.optimizer, lr)
        if self.cfg.grad_clip is not None:
            reduced = mp.clip_by_global_norm(reduced, self.cfg.grad_clip, norm_tensor)
        self.zero.updater(reduced)
        if self.ema is not None:
            self.ema.update()
        return StepResult(True, loss, norm, lr)

    def check_nonfinite(self, limit: int) -> None:
        if self.consecutive_nonfinite >= limit:
            raise NonFiniteLossError(
                f"{self.consecutive_nonfinite} consecutive steps had a non-finite loss or gradient norm "
                f"({self.skipped_total} skipped in all); stopping without saving them. Lower optim.lr, check the "
                "data for corrupt samples, or resume from the last checkpoint."
            )

    def state_dict(self) -> dict:
        return {
            "plateau": self.plateau.state_dict() if self.plateau else None,
            "skipped_total": self.skipped_total,
            "consecutive_nonfinite": self.consecutive_nonfinite,
        }

    def load_state_dict(self, state: dict) -> None:
        if self.plateau and state.get("plateau"):
            self.plateau.load_state_dict(state["plateau"])
        self.skipped_total = int(state.get("skipped_total", 0))
        self.consecutive_nonfinite = int(state.get("consecutive_nonfinite", 0))
