"""Learning-rate schedules: linear warmup then constant or cosine decay, and halving on a validation plateau."""

from __future__ import annotations

import math
from dataclasses import dataclass


def learning_rate(
    step: int, base_lr: float, warmup_steps: int, schedule: str, total_steps: int, min_lr: float
) -> float:
    """The learning rate for optimizer step `step` (0-based) before any plateau reduction."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule '{schedule}': expected 'constant' or 'cosine'")


@dataclass
class PlateauReducer:
    """Multiply the LR by `factor` when validation loss has not improved by `min_delta` for `patience` checks."""

    factor: float = 0.5
    patience: int = 5
    min_delta: float = 0.0
    min_scale: float = 0.0
    scale: float = 1.0
    best: float = math.inf
    bad_checks: int = 0

    def observe(self, val_loss: float) -> bool:
        """Record one validation loss; returns True when the scale was just reduced. A non-finite loss (a broken
        validation batch, not a plateau) is not recorded."""
        if not math.isfinite(val_loss):
            return False
        if val_loss < self.best - self.min_delta:
            self.best, self.bad_checks = val_loss, 0
            return False
        self.bad_checks += 1
        if self.bad_checks > self.patience and self.scale * self.factor >= self.min_scale:
            self.scale *= self.factor
            self.bad_checks = 0
            return True
        return False

    def state_dict(self) -> dict:
        best = self.best if math.isfinite(self.best) else None  # JSON has no infinity
        return {"scale": self.scale, "best": best, "bad_checks": self.bad_checks}

    def load_state_dict(self, state: dict) -> None:
        self.scale, self.best, self.bad_checks = (
            float(state["scale"]),
            math.inf if state["best"] is None else float(state["best"]),
            int(state["bad_checks"]),
        )
