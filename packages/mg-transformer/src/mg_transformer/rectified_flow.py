"""Rectified flow (flow matching with linear interpolation): the training objective and the Euler sampler.

Convention (the whole package uses it): time t in [0, 1] with t = 0 data and t = 1 pure noise; the reference
implementation's timestep is 1000 * t. With data x0, Gaussian noise e and sigma_min = 1e-5:

    x_t = (1 - t) * x0 + (sigma_min + (1 - sigma_min) * t) * e
    v   = x0 - (1 - sigma_min) * e          (= -dx_t/dt: the velocity points from noise towards data)

The model is trained to predict v (mean squared error). Sampling integrates from t = 1 to t = 0 with Euler steps
`x <- x + (t_i - t_{i+1}) * v(x, t_i)` over a decreasing schedule (the Movie Gen linear-quadratic one by default),
with classifier-free guidance `v = v_uncond + s * (v_cond - v_uncond)` computed in one batched model call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn, ops

SIGMA_MIN = 1e-5
TIMESTEP_SAMPLING = ("logit-normal", "uniform")
SCHEDULES = ("linear-quadratic", "linear")


# ----------------------------------------------------------------------------------------------------------------
# Training objective


def _per_sample(t: Tensor, ndim: int) -> Tensor:
    return t.astype(ms.float32).reshape((-1,) + (1,) * (ndim - 1))


def interpolate(x0: Tensor, noise: Tensor, t: Tensor, sigma_min: float = SIGMA_MIN) -> Tensor:
    """x_t = (1 - t) x0 + (sigma_min + (1 - sigma_min) t) noise, with t (B,) in [0, 1] and 1 = noise."""
    t = _per_sample(t, x0.ndim)
    return (1.0 - t) * x0 + (sigma_min + (1.0 - sigma_min) * t) * noise


def velocity_target(x0: Tensor, noise: Tensor, sigma_min: float = SIGMA_MIN) -> Tensor:
    """The regression target v = x0 - (1 - sigma_min) noise (= -dx_t/dt; points towards the data)."""
    return x0 - (1.0 - sigma_min) * noise


def sample_timesteps(
    batch: int,
    method: str = "logit-normal",
    loc: float = 0.0,
    scale: float = 1.0,
    eps: float = 1e-5,
    rng: np.random.Generator | None = None,
) -> Tensor:
    """Training times t (batch,) in [eps, 1 - eps]: sigmoid(N(loc, scale^2)) ("logit-normal", Movie Gen's
    choice, which favours mid-range t) or U(0, 1) ("uniform"). Draws come from `rng` when given (a numpy
    generator: reproducible per step whatever else the process draws, as mg-train's loop needs), else from
    MindSpore's seeded RNG."""
    if method not in TIMESTEP_SAMPLING:
        raise ValueError(f"timestep sampling must be one of {TIMESTEP_SAMPLING}, got {method!r}")
    normal = method == "logit-normal"
    if rng is not None:
        draws = rng.standard_normal(batch) if normal else rng.random(batch)
        z = Tensor(np.asarray(draws, dtype=np.float32))
    elif normal:
        z = ops.standard_normal((batch,))
    else:
        z = ops.uniform((batch,), Tensor(0.0, ms.float32), Tensor(1.0, ms.float32))
    t = mint.sigmoid(z * scale + loc) if normal else z
    return mint.clamp(t, eps, 1.0 - eps)


def _fit_length(emb: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Zero-pad (mask 0) or truncate a (n, L', D) embedding and its (n, L') mask to L = `length` tokens."""
    current = emb.shape[1]
    if current > length:
        return emb[:, :length], mask[:, :length]
    if current < length:
        emb = ops.pad(emb, (0, 0, 0, length - current))
        mask = ops.pad(mask, (0, length - current))
    return emb, mask


def drop_text(
    text_embs: Sequence[Tensor],
    text_masks: Sequence[Tensor] | None,
    null_text_embs: Sequence[Tensor],
    null_text_masks: Sequence[Tensor] | None,
    drop: Tensor,
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Replace the text of the samples where `drop` (B,) is true by the null (empty-prompt) text.

    Null embeddings are (L', D) or (1, L', D) per encoder, padded or truncated to the batch's length; a missing
    null mask means all its tokens are real. Returns embeddings and float masks (all ones where none were given).
    """
    keep = drop.astype(ms.bool_).reshape(-1, 1)
    embs = ()
    masks = ()
    for index, emb in enumerate(text_embs):
        batch, length = emb.shape[0], emb.shape[1]
        mask = (
            ops.ones((batch, length), ms.float32)
            if text_masks is None
            else text_masks[index].astype(ms.float32)
        )
        null = null_text_embs[index].astype(emb.dtype)
        null = null.reshape((1, *null.shape)) if null.ndim == 2 else null
        if null_text_masks is None or null_text_masks[index] is None:
            null_mask = ops.ones((1, null.shape[1]), ms.float32)
        else:
            null_mask = null_text_masks[index].astype(ms.float32).reshape(1, -1)
        null, null_mask = _fit_length(null, null_mask, length)
        embs = (*embs, mint.where(keep.reshape(-1, 1, 1), null, emb))
        masks = (*masks, mint.where(keep, null_mask, mask))
    return embs, masks


def rectified_flow_loss(
    model: Callable,
    latents: Tensor,
    text_embs: Sequence[Tensor],
    text_masks: Sequence[Tensor] | None,
    t: Tensor,
    noise: Tensor,
    sigma_min: float = SIGMA_MIN,
) -> Tensor:
    """Mean squared error between `model(x_t, t, text)` and the velocity target, for given t (B,) and noise."""
    x_t = interpolate(latents, noise, t, sigma_min)
    prediction = model(x_t, t, text_embs, text_masks)
    target = velocity_target(latents, noise, sigma_min)
    return mint.mean(mint.square(prediction.astype(ms.float32) - target.astype(ms.float32)))


class RectifiedFlowLoss(nn.Cell):
    """Training loss cell: `loss(latents, text_embs, text_masks)` -> scalar MSE on the velocity.

    Per call it samples t (logit-normal by default), the noise, and which samples' text is dropped (replaced by
    the null text with probability `text_dropout`, for classifier-free guidance). Each of `t`, `noise` and `drop`
    may instead be passed in (e.g. broadcast across sequence-parallel ranks, or fixed in tests). Works in
    PyNative and under `mindspore.jit`; the model's parameters are this cell's parameters.
    """

    def __init__(
        self,
        model: nn.Cell,
        null_text_embs: Sequence[Tensor] | None = None,
        null_text_masks: Sequence[Tensor] | None = None,
        text_dropout: float = 0.0,
        sigma_min: float = SIGMA_MIN,
        timestep_sampling: str = "logit-normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
    ):
        super().__init__()
        if timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(
                f"timestep_sampling must be one of {TIMESTEP_SAMPLING}, got {timestep_sampling!r}"
            )
        if not 0.0 <= text_dropout <= 1.0:
            raise ValueError(f"text_dropout must be in [0, 1], got {text_dropout}")
        if text_dropout > 0 and null_text_embs is None:
            raise ValueError(
                "text_dropout > 0 needs null_text_embs (the empty prompt's embeddings per encoder)"
            )
        self.model = model
        self.null_text_embs = (
            None if null_text_embs is None else tuple(Tensor(e, ms.float32) for e in null_text_embs)
        )
        self.null_text_masks = None
        if null_text_masks is not None:
            self.null_text_masks = tuple(Tensor(m, ms.float32) for m in null_text_masks)
        self.text_dropout = float(text_dropout)
        self.sigma_min = float(sigma_min)
        self.timestep_sampling = timestep_sampling
        self.logit_mean = float(logit_mean)
        self.logit_std = float(logit_std)

    def construct(self, latents: Tensor, text_embs, text_masks=None, t=None, noise=None, drop=None) -> Tensor:
        batch = latents.shape[0]
        if t is None:
            t = sample_timesteps(batch, self.timestep_sampling, self.logit_mean, self.logit_std)
        if noise is None:
            noise = ops.standard_normal(latents.shape).astype(latents.dtype)
        if drop is None and self.text_dropout > 0:
            drop = ops.uniform((batch,), Tensor(0.0, ms.float32), Tensor(1.0, ms.float32)) < self.text_dropout
        if drop is not None:
            text_embs, text_masks = drop_text(
                text_embs, text_masks, self.null_text_embs, self.null_text_masks, drop
            )
        return rectified_flow_loss(self.model, latents, text_embs, text_masks, t, noise, self.sigma_min)


# ----------------------------------------------------------------------------------------------------------------
# Sampling


def linear_schedule(num_steps: int) -> np.ndarray:
    """num_steps + 1 equally spaced times from 1 (noise) to 0 (data)."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    return np.linspace(1.0, 0.0, num_steps + 1)


def linear_quadratic_schedule(num_steps: int = 50, threshold: float = 0.025, linear_steps: int | None = None):
    """Movie Gen's linear-quadratic t-schedule: num_steps + 1 times from 1 (noise) down to 0 (data).

    The first `linear_steps` (default num_steps // 2) steps move t down by `threshold / linear_steps` each, i.e.
    from 1 to 1 - threshold; the remaining steps cover the rest on a quadratic curve whose step sizes grow
    linearly, starting from the linear part's step size. With 50 steps and threshold 0.025 the first
    25 steps equal those of a 1000-step linear schedule (1, 0.999, ..., 0.975), as the paper describes.
    """
    if num_steps < 2:
        raise ValueError(f"linear-quadratic schedule needs num_steps >= 2, got {num_steps}")
    linear_steps = num_steps // 2 if linear_steps is None else linear_steps
    if not 1 <= linear_steps < num_steps:
        raise ValueError(f"linear_steps must be in [1, {num_steps - 1}], got {linear_steps}")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    quadratic_steps = num_steps - linear_steps
    step = threshold / linear_steps  # step size of the linear part
    # Progress s = 1 - t goes 0 -> threshold in equal steps, then threshold -> 1 along
    # s(j) = threshold + step * j + c * j * (j - 1): the k-th quadratic step is step + 2 c k, so step sizes keep
    # growing linearly from the linear part's step and s reaches 1 at j = quadratic_steps.
    span = quadratic_steps * (quadratic_steps - 1)
    c = (1.0 - threshold - step * quadratic_steps) / span if span else 0.0
    if step + 2.0 * c * (quadratic_steps - 1) <= 0:
        raise ValueError(
            f"threshold={threshold} with {linear_steps} linear of {num_steps} steps leaves no monotone quadratic part"
        )
    linear = step * np.arange(linear_steps)
    j = np.arange(quadratic_steps + 1, dtype=np.float64)
    quadratic = threshold + step * j + c * j * (j - 1)
    quadratic[-1] = 1.0
    return 1.0 - np.concatenate([linear, quadratic])


def make_schedule(
    num_steps: int = 50, schedule: str = "linear-quadratic", threshold: float = 0.025
) -> np.ndarray:
    """The decreasing times (num_steps + 1, from 1 to 0) of a named schedule."""
    if schedule == "linear-quadratic":
        return linear_quadratic_schedule(num_steps, threshold)
    if schedule == "linear":
        return linear_schedule(num_steps)
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def _as_batch(embs: Sequence, masks: Sequence | None) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Per encoder: embeddings as (n, L, D) float tensors and masks as (n, L) floats (all ones when missing)."""
    out_embs, out_masks = (), ()
    for index, emb in enumerate(embs):
        emb = (emb if isinstance(emb, Tensor) else Tensor(np.asarray(emb))).astype(ms.float32)
        emb = emb.reshape((1, *emb.shape)) if emb.ndim == 2 else emb
        if masks is None or masks[index] is None:
            mask = ops.ones(emb.shape[:2], ms.float32)
        else:
            mask = masks[index]
            mask = (mask if isinstance(mask, Tensor) else Tensor(np.asarray(mask))).astype(ms.float32)
            mask = mask.reshape(emb.shape[:2])
        out_embs, out_masks = (*out_embs, emb), (*out_masks, mask)
    return out_embs, out_masks


def _batch_text(cond_embs, cond_masks, uncond_embs, uncond_masks, batch: int):
    """Concatenate conditional and unconditional text along the batch (padding each encoder to one length)."""
    embs = ()
    masks = ()
    for cond, cond_mask, uncond, uncond_mask in zip(
        cond_embs, cond_masks, uncond_embs, uncond_masks, strict=True
    ):
        if uncond.shape[0] == 1 and batch > 1:
            uncond = mint.tile(uncond, (batch, 1, 1))
            uncond_mask = mint.tile(uncond_mask, (batch, 1))
        length = max(cond.shape[1], uncond.shape[1])
        cond, cond_mask = _fit_length(cond, cond_mask, length)
        uncond, uncond_mask = _fit_length(uncond, uncond_mask, length)
        embs = (*embs, mint.cat((cond, uncond), 0))
        masks = (*masks, mint.cat((cond_mask, uncond_mask), 0))
    return embs, masks


def sample(
    model: Callable,
    shape: Sequence[int],
    text_embs: Sequence[Tensor],
    text_masks: Sequence[Tensor] | None = None,
    *,
    null_text_embs: Sequence[Tensor] | None = None,
    null_text_masks: Sequence[Tensor] | None = None,
    negative_text_embs: Sequence[Tensor] | None = None,
    negative_text_masks: Sequence[Tensor] | None = None,
    guidance_scale: float = 7.5,
    num_steps: int = 50,
    schedule: str = "linear-quadratic",
    threshold: float = 0.025,
    seed: int | None = 0,
    noise: Tensor | np.ndarray | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> Tensor:
    """Generate latents of `shape` (B, C, T, H, W) by Euler integration of the learned velocity from t=1 to 0.

    `model(x, t, text_embs, text_masks)` is a `MovieGenTransformer` (or any callable with its signature).
    With `guidance_scale` != 1 every step runs the conditional and unconditional inputs as one batch of 2B and
    uses v_uncond + guidance_scale * (v_cond - v_uncond); the unconditional text is `negative_text_embs` if
    given, else `null_text_embs` (the empty prompt's embeddings, as used for text dropout in training), each
    per encoder (B or 1, L, D) or (L, D). The start noise comes from `noise` or from numpy's generator seeded
    with `seed`, so a seed gives the same sample on every device and mode. `progress(step, num_steps, t)` is
    called after each step.
    """
    shape = tuple(int(s) for s in shape)
    batch = shape[0]
    if noise is None:
        noise = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    x = Tensor(noise, ms.float32) if not isinstance(noise, Tensor) else noise.astype(ms.float32)
    if tuple(x.shape) != shape:
        raise ValueError(f"sample: noise has shape {tuple(x.shape)}, expected {shape}")
    text_embs, cond_masks = _as_batch(text_embs, text_masks)
    guided = guidance_scale != 1.0
    if guided:
        use_negative = negative_text_embs is not None
        uncond_embs = negative_text_embs if use_negative else null_text_embs
        uncond_masks = negative_text_masks if use_negative else null_text_masks
        if uncond_embs is None:
            raise ValueError(
                "sample: guidance_scale != 1 needs null_text_embs (the empty prompt's embeddings) or negative_text_embs"
            )
        if len(uncond_embs) != len(text_embs):
            raise ValueError(
                f"sample: {len(uncond_embs)} unconditional embeddings for {len(text_embs)} encoders"
            )
        uncond_embs, uncond_masks = _as_batch(uncond_embs, uncond_masks)
        model_embs, model_masks = _batch_text(text_embs, cond_masks, uncond_embs, uncond_masks, batch)
    else:
        model_embs, model_masks = text_embs, cond_masks

    times = make_schedule(num_steps, schedule, threshold)
    for step in range(num_steps):
        t_now, t_next = float(times[step]), float(times[step + 1])
        if guided:
            t_batch = Tensor(np.full((2 * batch,), t_now, np.float32))
            velocity = model(mint.cat((x, x), 0), t_batch, model_embs, model_masks).astype(ms.float32)
            v_cond, v_uncond = velocity[:batch], velocity[batch:]
            velocity = v_uncond + guidance_scale * (v_cond - v_uncond)
        else:
            t_batch = Tensor(np.full((batch,), t_now, np.float32))
            velocity = model(x, t_batch, model_embs, model_masks).astype(ms.float32)
        x = x + (t_now - t_next) * velocity
        if progress is not None:
            progress(step + 1, num_steps, t_next)
    return x
