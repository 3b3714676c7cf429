"""Training losses of the TAE (Movie Gen recipe): L1 reconstruction, KL to N(0, I), and the outlier penalty.

All take MindSpore tensors in the public layouts (pixels (B, C, T, H, W), latents (B, C', T', h, w)) and are
differentiable; the perceptual loss lives in `mg_tae.lpips`.
"""

from __future__ import annotations

from mindspore import Tensor, ops


def l1_loss(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all elements."""
    if reconstruction.shape != target.shape:
        raise ValueError(f"l1_loss: shapes differ, {tuple(reconstruction.shape)} vs {tuple(target.shape)}")
    return ops.abs(reconstruction - target).mean()


def kl_loss(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over each sample's latent elements, averaged over the batch.

    logvar is clamped to [-30, 20] like the posterior. Movie Gen / mindone weight it by ~1e-6.
    """
    logvar = ops.clamp(logvar, -30.0, 20.0)
    per = 0.5 * (mean * mean + ops.exp(logvar) - 1.0 - logvar)
    return per.reshape(per.shape[0], -1).sum(-1).mean()


def outlier_penalty_loss(z: Tensor, r: float = 3.0) -> Tensor:
    """Movie Gen's outlier penalty: mean of max(|z - mu| - r * sigma, 0).

    mu and sigma are the mean and (population) standard deviation of each latent channel of each frame over its
    spatial positions, so only values more than r sigma away from their frame's channel mean are penalised.
    """
    if z.ndim != 5:
        raise ValueError(
            f"outlier_penalty_loss: expected latents (B, C, T, h, w), got shape {tuple(z.shape)}"
        )
    flat = z.reshape(z.shape[0], z.shape[1], z.shape[2], -1)
    mu = flat.mean(-1, keep_dims=True)
    sigma = ops.sqrt(((flat - mu) ** 2).mean(-1, keep_dims=True) + 1e-12)
    return ops.relu(ops.abs(flat - mu) - r * sigma).mean()
