"""Per-step random draws that do not depend on how a run is split: a resumed run and N data-parallel ranks draw
exactly what one continuous process draws."""

from __future__ import annotations

import numpy as np


def step_rng(seed: int, step: int, micro: int = 0, stream: int = 0) -> np.random.Generator:
    """The generator of one micro-batch's random draws (noise, timesteps, dropout).

    A pure function of (seed, step, micro-batch, stream): a resumed run draws exactly what a continuous run
    would, and every rank draws the global batch's values and keeps its slice, so N ranks draw what one
    process with the N-times larger batch draws.
    """
    return np.random.default_rng([seed, step, micro, stream])


def rank_slice(array: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This data-parallel rank's rows of a global-batch array."""
    per_rank = array.shape[0] // world
    return array[rank * per_rank : (rank + 1) * per_rank]
