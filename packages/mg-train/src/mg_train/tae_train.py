"""`mg-train tae-train`: train or fine-tune the Temporal Autoencoder on videos (and images).

The TAE task of the one training engine (`engine.train`): build the TAE (a preset, or a `save_pretrained` folder
such as an `mg-tae inflate` output), read bucketed batches of an mg-data `VideoDataset`, minimise L1 + KL
(+ MSE, + outlier penalty, + LPIPS), validate on held-out clips (L1 and PSNR), and export the final weights
(calibrated latent factors if asked) to `<output_dir>/tae/`. The engine does the rest (accumulation,
data-parallel reduction, non-finite skips, clipping, schedule, EMA, checkpoints, resume, stop requests).

Loss scale: every term is a mean per pixel value, so the reference recipe's weights (KL 1e-6, LPIPS 1.0) keep
their balance: the reference sums L1 over each frame's pixels and divides L1, LPIPS (broadcast per pixel) and the
KL sum by the number of frames; dividing all of that by C*H*W gives mean L1 + w_p * mean LPIPS + w_kl * KL sum /
number of pixel values, which is what is minimised here (AdamW does not care about the constant).

Randomness: the posterior noise and the joint image/video choice of every micro-batch come from
`draws.step_rng(seed, step, micro, stream)` for the global batch, so a resumed run and an N-rank run draw
exactly what a continuous single-process run draws.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

import mg_parallel as mp
from mg_data import (
    Bucket,
    BucketBatchSampler,
    BucketConfig,
    VideoDataset,
    is_image_path,
    load_manifest,
)
from mg_tae import LPIPS, TAEConfig, TemporalAutoencoder, kl_loss, l1_loss, outlier_penalty_loss
from mg_tae.metrics import psnr_per_frame
from mg_train import engine, paths
from mg_train.checkpoint import Checkpoint
from mg_train.config.loader import ConfigError
from mg_train.config.schema import DataConfig, TAEModelConfig, TAETrainConfig
from mg_train.draws import rank_slice, step_rng
from mg_train.engine import StepInputs
from mg_train.loader import BatchLoader
from mg_train.optim import NO_LR_SCALES
from mg_train.runtime import apply_precision, resolve_precision
from mg_train.train_state import full_weights

# Streams of `step_rng`: independent draws for the posterior noise and the image/video choice.
NOISE_STREAM = 0
IMAGE_STREAM = 1
CROP_STREAM = 2


# -- inputs -----------------------------------------------------------------------------------------------------


def tae_config(cfg: TAEModelConfig) -> TAEConfig:
    """The TAEConfig a run builds: the pretrained folder's config.json, or the preset, plus `overrides`."""
    try:
        if cfg.pretrained:
            base = TAEConfig.load(Path(cfg.pretrained) / "config.json").to_dict()
        elif cfg.preset == "tiny":
            base = TAEConfig.tiny().to_dict()
        else:
            base = TAEConfig().to_dict()
        return TAEConfig.from_dict({**base, **cfg.overrides}, source="model.overrides")
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model: {exc}") from exc


def build_tae(cfg: TAEModelConfig, seed: int) -> TemporalAutoencoder:
    """A TAE with fresh weights (seeded), or the pretrained folder's weights (strict: every key must match)."""
    model = TemporalAutoencoder(tae_config(cfg), seed=seed)
    if cfg.pretrained:
        from safetensors.numpy import load_file

        weights = Path(cfg.pretrained) / "model.safetensors"
        model.load_state_dict(load_file(str(weights)), strict=True, source=str(weights))
    return model


def _require_file(path: str | None, key: str, what: str, folder_ok: bool = False) -> None:
    if not path:
        raise ConfigError(f"{key} is not set: give {what}")
    if not (Path(path).exists() if folder_ok else Path(path).is_file()):
        raise ConfigError(f"{key}: {what} not found at {path}")


def check_data_config(data: DataConfig, config: TAEConfig) -> None:
    """Data fields that must hold before any work: existing manifests, sizes and crops the TAE can compress."""
    _require_file(data.manifest, "data.manifest", "the training manifest (CSV or folder)", folder_ok=True)
    if data.val_manifest is not None:
        _require_file(
            data.val_manifest, "data.val_manifest", "the validation manifest (CSV or folder)", folder_ok=True
        )
    s = config.spatial_compression
    if any(v % s for v in data.size):
        raise ConfigError(f"data.size={list(data.size)}: height and width must be positive multiples of {s}")
    if data.crop is not None and any(c % s or c > v for c, v in zip(data.crop, data.size, strict=True)):
        raise ConfigError(
            f"data.crop={list(data.crop)}: height and width must be positive multiples of {s}, "
            f"at most data.size={list(data.size)}"
        )


def check_config(cfg: TAETrainConfig) -> TAEConfig:
    """Validate every input of a tae-train run (ranges, files, sizes against the TAE) and return the TAEConfig."""
    cfg.check()
    if cfg.model.pretrained:
        folder = Path(cfg.model.pretrained)
        for name in ("config.json", "model.safetensors"):
            if not (folder / name).is_file():
                raise ConfigError(
                    f"model.pretrained: {folder / name} not found (expected a TAE save_pretrained folder, "
                    "e.g. the output of `mg-tae inflate`)"
                )
    config = tae_config(cfg.model)
    check_data_config(cfg.data, config)
    if cfg.loss.perceptual_weight > 0:
        _require_file(cfg.loss.lpips_weights, "loss.lpips_weights", "LPIPS VGG16 weights (safetensors)")
    try:
        resolve_precision(cfg.train.precision)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return config


def bucket_config(data: DataConfig, with_images: bool) -> BucketConfig:
    """Video buckets of every duration (`data.durations`, else `data.frames`) at `data.size` (one per aspect
    ratio when several are given, each with about the same pixel count), plus image buckets when the manifest
    holds images."""
    height, width = data.size
    image_batch = data.image_batch_size or data.batch_size
    durations = data.video_buckets()
    if len(data.aspect_ratios) <= 1:
        buckets = [Bucket(height, width, frames, batch) for frames, batch in durations.items()]
        if with_images:
            buckets.append(Bucket(height, width, 1, image_batch))
        return BucketConfig(buckets)
    return BucketConfig.grid(
        resolution=round(math.sqrt(height * width)),
        aspect_ratios=data.aspect_ratios,
        num_frames=list(durations),
        batch_size=durations,
        image_batch_size=image_batch if with_images else None,
    )


def build_loader(data: DataConfig, seed: int, ctx: mp.ParallelContext, num_workers: int) -> tuple:
    """(loader, frames_as_images): training batches of this data-parallel rank.

    Joint image/video training (`data.image_ratio`): when the manifest holds images, the sampler draws that
    fraction of steps from image buckets; when it holds only videos, that fraction of steps trains on one
    random frame of each clip instead (the reference recipe's "mixed_video_image"), decided in the loop.
    """
    manifest = load_manifest(data.manifest, data.root)
    with_images = any(is_image_path(row.video) for row in manifest.rows)
    dataset = VideoDataset(
        manifest,
        num_frames=data.frames,
        stride=data.stride,
        random_crop=data.random_crop,
        hflip=data.hflip,
        buckets=bucket_config(data, with_images),
        seed=seed,
    )
    sampler = BucketBatchSampler(
        dataset.assignment,
        seed=seed,
        rank=ctx.data_rank,
        world_size=ctx.data_world,
        image_ratio=data.image_ratio if with_images else None,
    )
    loader = BatchLoader(dataset, sampler, keys=["video", "substituted"], num_workers=num_workers)
    return loader, bool(data.image_ratio) and not with_images


def micro_batch(
    video: np.ndarray,
    model: TemporalAutoencoder,
    seed: int,
    step: int,
    micro: int,
    ctx: mp.ParallelContext,
    image_ratio: float | None,
    sample_posterior: bool,
    crop: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, posterior noise) of one micro-batch; draws cover the global batch, this rank keeps its rows."""
    rows, world = video.shape[0], ctx.data_world
    if image_ratio:
        rng = step_rng(seed, step, micro, IMAGE_STREAM)
        as_image = rng.random() < image_ratio
        frames = rank_slice(rng.integers(0, video.shape[2], rows * world), ctx.data_rank, world)
        if as_image:
            video = video[np.arange(rows), :, frames][:, :, None]
    if (
        crop is not None and video.shape[2] > 1
    ):  # images (and frames drawn as images) train whole: they are cheap
        video = random_crops(video, crop, step_rng(seed, step, micro, CROP_STREAM), ctx)
    shape = (rows * world, *model.latent_shape(*video.shape[2:]))
    if sample_posterior:
        noise = step_rng(seed, step, micro, NOISE_STREAM).standard_normal(shape, dtype=np.float32)
        noise = rank_slice(noise, ctx.data_rank, world)
    else:
        noise = np.zeros((rows, *shape[1:]), np.float32)
    return np.ascontiguousarray(video, dtype=np.float32), np.ascontiguousarray(noise)


def random_crops(
    video: np.ndarray, crop: tuple[int, int], rng: np.random.Generator, ctx: mp.ParallelContext
) -> np.ndarray:
    """One random (height, width) window per clip of `video` (B, C, T, H, W), the same for all its frames; the
    corners are drawn for the global batch and this rank keeps its rows."""
    rows, world = video.shape[0], ctx.data_world
    height, width = crop
    tops = rank_slice(rng.integers(0, video.shape[3] - height + 1, rows * world), ctx.data_rank, world)
    lefts = rank_slice(rng.integers(0, video.shape[4] - width + 1, rows * world), ctx.data_rank, world)
    return np.stack(
        [
            clip[:, :, top : top + height, left : left + width]
            for clip, top, left in zip(video, tops, lefts, strict=True)
        ]
    )


# -- objective --------------------------------------------------------------------------------------------------


def make_objective(
    model: TemporalAutoencoder, loss_cfg, lpips: LPIPS | None
) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]:
    """loss(x, noise) -> (total, mean L1, KL per pixel value); the total is what gets differentiated."""
    kl_weight, opl_weight, opl_r, opl_form = (
        loss_cfg.kl_weight,
        loss_cfg.opl_weight,
        loss_cfg.opl_r,
        loss_cfg.opl_form,
    )
    mse_weight = loss_cfg.mse_weight
    perceptual_weight = loss_cfg.perceptual_weight if lpips is not None else 0.0

    def objective(x, noise):
        recon, mean, logvar = model(x, noise)
        l1 = l1_loss(recon, x)
        pixels_per_sample = x.shape[1] * x.shape[2] * x.shape[3] * x.shape[4]
        kl = kl_loss(mean, logvar) / pixels_per_sample  # KL sum / number of pixel values
        total = l1 + kl_weight * kl
        if mse_weight > 0:
            total = total + mse_weight * ops.square(recon - x).mean()
        if opl_weight > 0:
            z = mean + ops.exp(0.5 * logvar) * noise
            total = total + opl_weight * outlier_penalty_loss(z, opl_r, opl_form)
        if perceptual_weight > 0:
            total = total + perceptual_weight * lpips(recon, x).mean()
        return total, l1, kl

    return objective


# -- validation -------------------------------------------------------------------------------------------------


def validation_clips(data: DataConfig, seed: int, manifest: str | None = None) -> VideoDataset:
    """Held-out clips (or those of `manifest`), deterministic: centre clips, centre crops, no flips."""
    return VideoDataset(
        manifest or data.val_manifest,
        data.root,
        num_frames=data.frames,
        stride=data.stride,
        size=data.size,
        start="center",
        seed=seed,
    )


def calibrate_latents(
    model: TemporalAutoencoder, data: DataConfig, seed: int, count: int
) -> tuple[float, float]:
    """Set `model.config.shift_factor` / `scaling_factor` to the mean and 1 / std of the posterior means of the
    first `count` training clips (centre clips, whole frames): latents scaled this way have zero mean and unit
    variance, what rectified flow's Gaussian noise assumes. Returns (shift, scale)."""
    clips = validation_clips(data, seed, data.manifest)
    model.set_train(False)
    videos = (clips[i]["video"] for i in range(min(count, len(clips))))
    means = [
        model.encode(Tensor(batch)).mean.asnumpy() for batch in _batches_of_one_shape(videos, data.batch_size)
    ]
    model.set_train(True)
    values = np.concatenate([m.reshape(-1) for m in means]).astype(np.float64)
    shift, scale = float(values.mean()), float(1.0 / max(values.std(), 1e-6))
    model.config.shift_factor, model.config.scaling_factor = shift, scale
    return shift, scale


def _batches_of_one_shape(arrays: Iterator[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    pending: list[np.ndarray] = []
    for array in arrays:
        if pending and (len(pending) == batch_size or array.shape != pending[0].shape):
            yield np.stack(pending)
            pending = []
        pending.append(array)
    if pending:
        yield np.stack(pending)


def validate(
    model: TemporalAutoencoder, clips: VideoDataset, count: int, batch_size: int, ctx: mp.ParallelContext
) -> dict[str, float]:
    """Mean L1 (per pixel value) and mean PSNR (per frame, mg_tae conventions) of the posterior-mean
    reconstructions of the first `count` held-out clips, split over data-parallel ranks and reduced."""
    mine = range(ctx.data_rank, min(count, len(clips)), ctx.data_world)
    totals = np.zeros(4, np.float64)  # sum |x - x'|, values, sum of frame PSNRs, frames
    videos = (clips[i]["video"] for i in mine)
    for batch in _batches_of_one_shape(videos, batch_size):
        recon = model(Tensor(batch))[0].asnumpy()
        totals += [np.abs(recon - batch).sum(), batch.size, psnr_per_frame(recon, batch).sum(), 0]
        totals[3] += batch.shape[0] * batch.shape[2]
    if ctx.world_group.size > 1:
        totals = mp.all_reduce(Tensor(totals.astype(np.float32)), ctx.world_group).asnumpy()
        totals = totals.astype(np.float64) / ctx.size("cp") / ctx.size("sp") / ctx.size("tp")
    return {"val_loss": float(totals[0] / totals[1]), "val_psnr": float(totals[2] / totals[3])}


# -- the task -------------------------------------------------------------------------------------------------


class TAETask:
    """The TAE for `engine.train`: its model, batches, objective, validation and export."""

    name = "tae-train"
    aux_names = ("l1", "kl")
    lr_scales = NO_LR_SCALES
    zero_stage = 0

    def __init__(self, cfg: TAETrainConfig, ctx: mp.ParallelContext):
        self.config, self.run, self.optim, self.ctx = cfg, cfg.train, cfg.optim, ctx
        self.tae_config = check_config(cfg)
        self.lpips = (
            LPIPS.from_safetensors(cfg.loss.lpips_weights) if cfg.loss.perceptual_weight > 0 else None
        )
        self.loader, frames_as_images = build_loader(cfg.data, cfg.train.seed, ctx, cfg.train.num_workers)
        self.image_ratio = cfg.data.image_ratio if frames_as_images else None
        self.val_clips = validation_clips(cfg.data, cfg.train.seed) if cfg.data.val_manifest else None
        ms.set_seed(cfg.train.seed)
        self.model = build_tae(cfg.model, cfg.train.seed)
        self.model.set_gradient_checkpointing(cfg.train.gradient_checkpointing)
        self.model.set_train(True)
        apply_precision(self.model, resolve_precision(cfg.train.precision))
        self.loss = make_objective(self.model, cfg.loss, self.lpips)

    def initialize(self) -> None:
        """Nothing to do: the TAE is built with its values (seeded, or the pretrained folder's)."""

    def inputs(self, batch: dict, step: int, micro: int) -> StepInputs:
        cfg = self.config
        x, noise = micro_batch(
            batch["video"],
            self.model,
            cfg.train.seed,
            step,
            micro,
            self.ctx,
            self.image_ratio,
            cfg.loss.sample_posterior,
            cfg.data.crop,
        )
        return StepInputs((Tensor(x), Tensor(noise)), {"frames": int(x.shape[2])})

    def validate(self) -> dict[str, float] | None:
        if self.val_clips is None:
            return None
        count = self.run.val_batches * self.config.data.batch_size
        return validate(self.model, self.val_clips, count, self.config.data.batch_size, self.ctx)

    def describe(self) -> list[str]:
        cfg = self.config
        source = cfg.model.pretrained or f"preset {cfg.model.preset}"
        size = sum(p.size for p in self.model.trainable_params()) / 1e6
        lines = [
            f"tae-train: {source}, {size:.2f}M parameters, {self.ctx.data_world} data-parallel rank(s), "
            f"{len(self.loader.sampler)} batches per epoch"
        ]
        if self.image_ratio:
            lines.append(
                f"data.image_ratio={self.image_ratio}: the manifest has no images, so that fraction of steps "
                "trains on one random frame of each clip"
            )
        return lines

    def model_info(self) -> dict:
        return {"kind": "tae", "config": self.tae_config.to_dict()}

    def export(self, checkpoint: Path, out: Path) -> Path:
        """`<out>/tae`: the final weights, with latent factors calibrated on training clips if asked."""
        specs, read, close = full_weights(Checkpoint.open(checkpoint))
        try:
            arrays = {name: read(name) for name, _ in specs}  # a TAE is small: whole in memory is fine
        finally:
            close()
        model = TemporalAutoencoder(self.tae_config)
        model.load_state_dict(arrays, strict=True, source="final weights")
        cfg = self.config
        if cfg.calibrate_latents:
            shift, scale = calibrate_latents(model, cfg.data, cfg.train.seed, cfg.calibrate_latents)
            print(
                f"tae-train: latent shift_factor {shift:.4g}, scaling_factor {scale:.4g} "
                f"(mean and 1/std over {cfg.calibrate_latents} training clips)",
                file=sys.stderr,
                flush=True,
            )
        final = out / paths.TAE_DIR
        model.save_pretrained(final)
        return final


def run(cfg: TAETrainConfig) -> Path:
    """Train the TAE as configured; returns `<output_dir>/tae` (the final weights, EMA weights if EMA is on).
    Raises `engine.TrainingStopped` after checkpointing when stopped by SIGTERM / Ctrl-C."""
    cfg.check()  # value ranges first: nothing is read or built for a config that cannot work
    ctx = mp.init_parallel()
    engine.train(TAETask(cfg, ctx), ctx)
    return Path(cfg.train.output_dir) / paths.TAE_DIR
