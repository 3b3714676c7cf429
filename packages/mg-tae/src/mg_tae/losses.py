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


OPL_FORMS = ("reference", "paper")


def outlier_penalty_loss(z: Tensor, r: float = 3.0, form: str = "reference") -> Tensor:
    """Movie Gen's outlier penalty on latents z (B, C, T, h, w), in one of two readings:

    - "reference" (default; mindone's Movie Gen code): mean over all elements of max(|z - mu| - r * sigma, 0),
      with mu and sigma the mean and (population) standard deviation of each channel of each latent frame over
      its spatial positions: an absolute value per element, only values beyond r sigma are penalised.
    - "paper" (the Movie Gen paper's formula, 1/(HW) sum_ij max(||X_ij - Mean(X)|| - r ||Std(X)||, 0) with
      X = one sample's latent (T x C x H x W)): X_ij is the T x C block of values at spatial position (i, j) and
      ||.|| its L2 norm, Mean and Std are scalars over the whole sample; averaged over positions and samples.
      An L2 norm over T*C values is about sqrt(T*C) sigma for Gaussian latents, so with r = 3 most positions are
      penalised: this reading pulls every latent vector towards the mean, not only outliers.
    """
    if z.ndim != 5:
        raise ValueError(
            f"outlier_penalty_loss: expected latents (B, C, T, h, w), got shape {tuple(z.shape)}"
        )
    if form == "reference":
        flat = z.reshape(z.shape[0], z.shape[1], z.shape[2], -1)
        mu = flat.mean(-1, keep_dims=True)
        sigma = ops.sqrt(((flat - mu) ** 2).mean(-1, keep_dims=True) + 1e-12)
        return ops.relu(ops.abs(flat - mu) - r * sigma).mean()
    if form == "paper":
        batch = z.shape[0]
        flat = z.reshape(batch, -1)
        mu = flat.mean(-1, keep_dims=True)
        sigma = ops.sqrt(((flat - mu) ** 2).mean(-1, keep_dims=True) + 1e-12)
        deviation = (z - mu.reshape(batch, 1, 1, 1, 1)).reshape(batch, z.shape[1] * z.shape[2], -1)
        norms = ops.sqrt((deviation * deviation).sum(1) + 1e-12)  # (B, h * w)
        return ops.relu(norms - r * sigma).mean()
    raise ValueError(f"outlier_penalty_loss: form must be one of {OPL_FORMS}, got {form!r}")
