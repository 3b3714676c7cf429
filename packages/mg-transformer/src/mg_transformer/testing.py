"""Helpers for tests here and in packages built on top (mg-train, mg-parallel): random inputs and weights."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mindspore import Tensor

from mg_transformer.config import TransformerConfig


def dummy_inputs(
    config: TransformerConfig,
    batch: int = 2,
    latent_size: Sequence[int] = (2, 8, 8),
    text_lengths: Sequence[int] | None = None,
    padding: bool = True,
    seed: int = 0,
):
    """Random `(latents, timesteps, text_embs, text_masks)` as MindSpore tensors for `config`.

    latents (B, in_channels, T, H, W) ~ N(0, 1); timesteps (B,) ~ U(0, 1); per encoder an embedding (B, L, D) and
    a float mask (B, L) whose sample b has its last b tokens padded (when `padding`), so masks matter.
    """
    rng = np.random.default_rng(seed)
    lengths = text_lengths or [5 + 2 * i for i in range(len(config.text_dims))]
    latents = rng.standard_normal((batch, config.in_channels, *latent_size)).astype(np.float32)
    timesteps = rng.uniform(0.0, 1.0, batch).astype(np.float32)
    embs, masks = [], []
    for length, dim in zip(lengths, config.text_dims.values(), strict=True):
        embs.append(Tensor(rng.standard_normal((batch, length, dim)).astype(np.float32)))
        mask = np.ones((batch, length), np.float32)
        if padding:
            for b in range(batch):
                mask[b, length - min(b, length - 1) :] = 0.0
        masks.append(Tensor(mask))
    return Tensor(latents), Tensor(timesteps), tuple(embs), tuple(masks)


def randomize_parameters(model, seed: int = 0, std: float = 0.05) -> None:
    """Give every parameter a random value (norm gains around 1), so zero-initialised layers carry gradients."""
    rng = np.random.default_rng(seed)
    for _, param in model.parameters_and_names():
        value = rng.standard_normal(param.shape) * std
        if param.ndim == 1:  # norm gains
            value = 1.0 + value
        param.set_data(Tensor(value.astype(np.float32)))
