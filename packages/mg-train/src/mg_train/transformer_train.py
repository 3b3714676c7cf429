"""`mg-train train`: the Movie Gen transformer's training loop, for any stage, in one process or under msrun.

Inputs: latents from a latent cache (`latent_cache`, scaled with the cache's factors) or encoded from pixels by a
frozen TAE (`tae`); text embeddings from a text cache (`text_cache`) or computed online by the text encoders
(`text`). The model is a preset (with overrides) or a previous stage's transformer (`model.init_from`, position
tables resized). Objective: rectified flow. Every random draw of a step (timesteps, noise, text dropout, TAE
posterior noise) comes from `engine.step_rng(seed, step, micro)` for the global batch, each rank keeping its
rows, so a resumed run equals an uninterrupted one and N data-parallel ranks equal one process with an N times
larger batch. Parallelism (data parallel, ZeRO-1/2/3, Ulysses sequence parallel) is applied in
`parallel_plan.parallelize_transformer` and `engine.build_optimizer`.

Run directory: config.yaml, metrics.jsonl, checkpoints/step_*, and at the end `transformer/` (EMA weights when
EMA is on) and `pipeline/` (when the TAE and the text encoders are known).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import mindspore as ms
import numpy as np
from mindspore import Tensor

import mg_parallel as mp
from mg_data import BucketBatchSampler, BucketConfig, VideoDataset, collate
from mg_data.caches import LatentStore, TextEmbeddingStore
from mg_parallel.groups import init_distributed
from mg_tae import TemporalAutoencoder
from mg_train import engine, paths
from mg_train.checkpoint import CheckpointManager
from mg_train.config.loader import ConfigError
from mg_train.config.schema import DataConfig, TransformerTrainConfig
from mg_train.ema import EMA
from mg_train.loader import BatchLoader
from mg_train.parallel_plan import check_sequence_parallel, parallelize_transformer
from mg_train.pipeline import MovieGenPipeline, PipelineInfo
from mg_train.progress import Progress
from mg_train.runtime import StopRequest, apply_precision, resolve_precision
from mg_transformer import MovieGenTransformer, TransformerConfig, drop_text, rectified_flow_loss
from mg_transformer.pretrained import load_state_dict
from mg_transformer.text import ENCODER_NAMES, TextEmbedder

TEMPORAL, SPATIAL = 8, 8  # TAE compression (docs/contracts.md 1)
T_EPS = 1e-5  # training times are clipped to [T_EPS, 1 - T_EPS], as mg_transformer.sample_timesteps does
VAL_STREAM = 7919  # seeds the fixed validation noise apart from the training draws
EXAMPLE_PROMPTS = 8  # training captions recorded in pipeline.json


class TrainConfigError(ConfigError):
    """The config or its inputs cannot work; raised before any training work, naming the field."""


# -- checks before any work -----------------------------------------------------------------------------------


def training_buckets(data: DataConfig) -> BucketConfig:
    """The batch shapes of a run: one video bucket per aspect ratio at the area of `data.size` (Movie Gen's
    equal token counts), plus image buckets for joint image/video training (`image_ratio` > 0, or
    `image_batch_size` set while `image_ratio` is unset); with `frames: 1` image buckets only. `data.size` must
    be the bucket of its own aspect ratio."""
    if data.crop is not None:
        raise TrainConfigError(f"data.crop={list(data.crop)}: crops are for tae-train only; remove data.crop")
    height, width = (int(v) for v in data.size)
    if height < 16 or width < 16 or height % 16 or width % 16:
        raise TrainConfigError(
            f"data.size={list(data.size)}: height and width must be positive multiples of 16"
        )
    if data.frames < 1:
        raise TrainConfigError(f"data.frames={data.frames}: expected at least 1 (1 = images)")
    if data.batch_size < 1 or (data.image_batch_size is not None and data.image_batch_size < 1):
        raise TrainConfigError("data.batch_size and data.image_batch_size must be at least 1")
    image_size = data.image_batch_size or data.batch_size
    with_images = data.frames > 1 and (
        (data.image_ratio is not None and data.image_ratio > 0)
        or (data.image_ratio is None and data.image_batch_size is not None)
    )
    try:
        buckets = BucketConfig.grid(
            resolution=round(math.sqrt(height * width)),
            aspect_ratios=data.aspect_ratios,
            num_frames=[data.frames],
            batch_size=image_size if data.frames == 1 else data.batch_size,
            image_batch_size=image_size if with_images else None,
        )
    except ValueError as exc:
        raise TrainConfigError(f"data.aspect_ratios={data.aspect_ratios}: {exc}") from None
    sizes = sorted({(b.height, b.width) for b in buckets.buckets})
    if (height, width) not in sizes:
        raise TrainConfigError(
            f"data.size={[height, width]} is not among the bucket sizes {sizes} that data.aspect_ratios="
            f"{data.aspect_ratios} give at its area; add its aspect ratio {width}:{height} (reduced) to "
            "data.aspect_ratios or change data.size"
        )
    return buckets


def latent_grid(bucket_frames: int, height: int, width: int, patch: Sequence[int]) -> tuple[int, int, int]:
    """Patches (t, h, w) of one sample of a bucket."""
    t = -(-bucket_frames // TEMPORAL)
    return (-(-t // patch[0]), height // SPATIAL // patch[1], width // SPATIAL // patch[2])


def check_model_fits(config: TransformerConfig, buckets: BucketConfig, sp: int, where: str) -> None:
    """Every bucket's patch grid fits the position tables, and its token count divides by sp."""
    check_sequence_parallel(config, sp)
    for bucket in buckets.buckets:
        grid = latent_grid(bucket.num_frames, bucket.height, bucket.width, config.patch_size)
        if any(g > m for g, m in zip(grid, config.pos_embed_max_size, strict=True)):
            raise TrainConfigError(
                f"{where}: bucket {bucket.name} needs {grid} (t, h, w) patches but pos_embed_max_size is "
                f"{list(config.pos_embed_max_size)}; raise model.overrides.pos_embed_max_size (tables are "
                "resized when loading model.init_from)"
            )
        check_sequence_parallel(config, sp, tokens=math.prod(grid))


def preset_config(cfg: TransformerTrainConfig, text_dims: dict[str, int], channels: int) -> TransformerConfig:
    """The TransformerConfig of a run: the `init_from` model's (plus overrides) or the preset's."""
    overrides = dict(cfg.model.overrides)
    if "text_dims" in overrides:
        raise TrainConfigError(
            "model.overrides.text_dims: the text widths come from the text encoders or the text cache; remove it"
        )
    for key in ("in_channels", "out_channels"):
        if overrides.get(key, channels) != channels:
            raise TrainConfigError(
                f"model.overrides.{key}={overrides[key]} but the latents have {channels} channels"
            )
    try:
        if cfg.model.init_from:
            source = paths.resolve_model_dir(cfg.model.init_from, "transformer") / "config.json"
            data = {**TransformerConfig.from_json(source).to_dict(), **overrides}
            config = TransformerConfig.from_dict(data, source=f"{source} + model.overrides")
        else:
            overrides.update(in_channels=channels, out_channels=channels)
            config = TransformerConfig.preset(cfg.model.preset, text_dims=text_dims, **overrides)
    except ValueError as exc:
        raise TrainConfigError(f"model: {exc}") from None
    if config.in_channels != channels:
        raise TrainConfigError(
            f"model.init_from has in_channels={config.in_channels} but the latents have {channels} channels"
        )
    if any(text_dims.get(name) != dim for name, dim in config.text_dims.items()):
        raise TrainConfigError(
            f"model.init_from expects text encoders {dict(config.text_dims)}, the text source gives {text_dims}"
        )
    return config


def check_inputs(cfg: TransformerTrainConfig) -> None:
    """Files and folders the run needs exist, and the settings agree; raises TrainConfigError naming the field."""

    def need(path: str | None, field: str, what: str) -> None:
        if not path:
            raise TrainConfigError(f"{field} is not set: {what}")
        if not Path(path).exists():
            raise TrainConfigError(f"{field}={path}: no such file or folder ({what})")

    need(cfg.data.manifest, "data.manifest", "the CSV manifest of the training data")
    if cfg.data.val_manifest:
        need(cfg.data.val_manifest, "data.val_manifest", "the CSV manifest of the validation data")
    if cfg.train.val_every > 0 and not cfg.data.val_manifest:
        raise TrainConfigError("train.val_every > 0 needs data.val_manifest (held-out data)")
    if cfg.latent_cache:
        need(cfg.latent_cache, "latent_cache", "a latent cache from `mg-train cache-latents`")
    elif not cfg.tae:
        raise TrainConfigError("set latent_cache (cached latents) or tae (a TAE to encode pixels with)")
    if cfg.val_latent_cache:
        need(cfg.val_latent_cache, "val_latent_cache", "the latent cache of the validation manifest")
    if cfg.tae:
        need(cfg.tae, "tae", "a TAE folder or tae-train run directory")
        try:
            paths.resolve_model_dir(cfg.tae, "tae")
        except FileNotFoundError as exc:
            raise TrainConfigError(f"tae: {exc}") from None
    if cfg.text_cache:
        need(cfg.text_cache, "text_cache", "a text-embedding cache from `mg-train cache-text`")
    elif not cfg.text.encoders:
        raise TrainConfigError("set text_cache or text.encoders")
    if cfg.model.init_from:
        need(
            cfg.model.init_from, "model.init_from", "the previous stage's run directory or transformer folder"
        )
        try:
            paths.resolve_model_dir(cfg.model.init_from, "transformer")
        except FileNotFoundError as exc:
            raise TrainConfigError(f"model.init_from: {exc}") from None
    if cfg.train.resume not in (None, "auto"):
        need(cfg.train.resume, "train.resume", "a checkpoint or a run directory with checkpoints")
    checks = [
        (cfg.train.steps >= 0, "train.steps must be >= 0"),
        (cfg.data.cache_memory_mb >= 0, "data.cache_memory_mb must be >= 0 (0 keeps nothing in memory)"),
        (cfg.optim.grad_accum >= 1, "optim.grad_accum must be >= 1"),
        (0.0 <= cfg.flow.text_dropout <= 1.0, "flow.text_dropout must be in [0, 1]"),
        (cfg.flow.val_timesteps >= 1, "flow.val_timesteps must be >= 1"),
        (cfg.flow.logit_std > 0, "flow.logit_std must be > 0"),
        (cfg.train.max_nonfinite_steps >= 1, "train.max_nonfinite_steps must be >= 1"),
        (cfg.train.save_every >= 1, "train.save_every must be >= 1"),
        (cfg.parallel.sp >= 1, "parallel.sp must be >= 1"),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainConfigError(message)
    training_buckets(cfg.data)


def check_parallel(cfg: TransformerTrainConfig, world_size: int) -> None:
    if world_size % cfg.parallel.sp:
        hint = " (run it under msrun)" if world_size == 1 else ""
        raise TrainConfigError(
            f"parallel.sp={cfg.parallel.sp} needs a world size divisible by it; this job has {world_size} "
            f"process(es){hint}"
        )


# -- text ------------------------------------------------------------------------------------------------------


class TextSource:
    """Text embeddings of a batch as per-encoder tuples in the model's order: read from the text cache (the
    dataset puts them in the batch) or computed online from the captions (memoised per caption)."""

    MEMO_LIMIT = 4096

    def __init__(self, cfg: TransformerTrainConfig):
        self.store: TextEmbeddingStore | None = None
        self.embedder: TextEmbedder | None = None
        self._memo: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        max_lengths = dict(cfg.text.max_lengths) or None
        self.memory_mb = cfg.data.cache_memory_mb
        if cfg.text_cache:
            store = TextEmbeddingStore(cfg.text_cache, max_lengths=max_lengths)
            order = [n for n in ENCODER_NAMES if n in store.specs] + [
                n for n in store.specs if n not in ENCODER_NAMES
            ]
            self.store = TextEmbeddingStore(
                cfg.text_cache, encoders=order, max_lengths=max_lengths, memory_mb=self.memory_mb
            )
            specs = self.store.specs
            self.dims = {n: int(specs[n].dim) for n in order}
            self.lengths = {n: int(specs[n].max_length) for n in order}
            known = all(specs[n].model for n in order)
            self.spec = (
                {
                    "encoders": {n: specs[n].model for n in order},
                    "seed": 0,
                    "max_lengths": dict(self.lengths),
                }
                if known
                else None
            )
            self._null = self.store.null()
        else:
            self.embedder = TextEmbedder(dict(cfg.text.encoders), seed=cfg.text.seed, max_lengths=max_lengths)
            self.dims = dict(self.embedder.dims)
            self.lengths = dict(self.embedder.max_lengths)
            self.spec = {
                "encoders": dict(cfg.text.encoders),
                "seed": cfg.text.seed,
                "max_lengths": dict(cfg.text.max_lengths),
            }
            self._null = {n: (e[0], m[0]) for n, (e, m) in self.embedder.embed_null().items()}
        self.names: tuple[str, ...] = tuple(self.dims)

    def use(self, names: Sequence[str]) -> None:
        """Serve only `names`, in this order (the model's encoders)."""
        self.names = tuple(names)
        if self.store is not None:
            self.store = TextEmbeddingStore(
                self.store.root,
                encoders=list(names),
                max_lengths={n: self.lengths[n] for n in names},
                memory_mb=self.memory_mb,
            )

    def batch_keys(self) -> list[str]:
        """Keys the dataset must serve for this source."""
        if self.store is None:
            return []
        return [key for n in self.names for key in (f"{n}_emb", f"{n}_mask")]

    def null(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The empty prompt's (L, D) embedding and (L,) mask per encoder."""
        return (
            [self._null[n][0].astype(np.float32) for n in self.names],
            [self._null[n][1].astype(np.float32) for n in self.names],
        )

    def embeddings(
        self, batch: dict, captions: Sequence[str]
    ) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
        if self.store is not None:
            embs = [batch[f"{n}_emb"] for n in self.names]
            masks = [batch[f"{n}_mask"] for n in self.names]
        else:
            todo = sorted({c for c in captions if c not in self._memo})
            if todo:
                if len(self._memo) + len(todo) > self.MEMO_LIMIT:
                    self._memo.clear()
                out = self.embedder.embed(todo)
                for i, caption in enumerate(todo):
                    self._memo[caption] = {n: (out[n][0][i], out[n][1][i]) for n in out}
            embs = [np.stack([self._memo[c][n][0] for c in captions]) for n in self.names]
            masks = [np.stack([self._memo[c][n][1] for c in captions]) for n in self.names]
        return (
            tuple(Tensor(np.asarray(e, np.float32)) for e in embs),
            tuple(Tensor(np.asarray(m, np.float32)) for m in masks),
        )


# -- latents ---------------------------------------------------------------------------------------------------


def _find_tae(reference: str, base: Path | None) -> Path | None:
    for candidate in (Path(reference), *([base / reference] if base is not None else [])):
        try:
            return paths.resolve_model_dir(candidate, "tae")
        except FileNotFoundError:
            continue
    return None


class LatentSource:
    """Scaled latents of a batch: the cached posterior sample scaled with the cache's factors, or the frozen
    TAE's posterior sample of the pixels (posterior noise from the step's generator)."""

    def __init__(self, cfg: TransformerTrainConfig):
        self.store = LatentStore(cfg.latent_cache) if cfg.latent_cache else None
        self.tae: TemporalAutoencoder | None = None
        self.tae_dir: Path | None = paths.resolve_model_dir(cfg.tae, "tae") if cfg.tae else None
        if self.store is not None:
            meta = self.store.meta
            self.channels = meta.latent_channels
            if self.tae_dir is None and meta.tae:
                self.tae_dir = _find_tae(meta.tae, self.store.root)
        if self.tae_dir is not None:
            self.tae = TemporalAutoencoder.from_pretrained(self.tae_dir)
            self.tae.set_train(False)
            if cfg.tae_tiling:
                self.tae.enable_tiling()
            for param in self.tae.get_parameters():
                param.requires_grad = False
            if self.store is None:
                self.channels = self.tae.config.latent_channels
            else:
                self._check_against_cache()

    def _check_against_cache(self) -> None:
        meta, config = self.store.meta, self.tae.config
        same = (
            config.latent_channels == meta.latent_channels
            and math.isclose(config.scaling_factor, meta.scaling_factor, rel_tol=1e-6)
            and math.isclose(config.shift_factor, meta.shift_factor, rel_tol=1e-6, abs_tol=1e-9)
        )
        if not same:
            raise TrainConfigError(
                f"the TAE {self.tae_dir} (channels {config.latent_channels}, scaling {config.scaling_factor}, "
                f"shift {config.shift_factor}) does not match the latent cache {self.store.root} "
                f"({meta.latent_channels}, {meta.scaling_factor}, {meta.shift_factor})"
            )

    @property
    def key(self) -> str:
        return "latent" if self.store is not None else "video"

    def latents(self, batch: dict, eps: Callable[[tuple[int, ...]], np.ndarray]) -> Tensor:
        """`eps(shape)` returns this rank's posterior noise for a per-sample latent shape (pixel mode only)."""
        if self.store is not None:
            return Tensor(self.store.scale(batch["latent"]).astype(np.float32))
        posterior = self.tae.encode(Tensor(batch["video"].astype(np.float32)))
        noise = Tensor(eps(tuple(posterior.mean.shape[1:])))
        return self.tae.scale_latents(posterior.mean + posterior.std * noise)


# -- random draws ----------------------------------------------------------------------------------------------


def draw_timesteps(rng: np.random.Generator, n: int, method: str, mean: float, std: float) -> np.ndarray:
    """Training times t in [T_EPS, 1 - T_EPS]: sigmoid(N(mean, std^2)) or U(0, 1) (1 = noise)."""
    if method == "logit-normal":
        t = 1.0 / (1.0 + np.exp(-(mean + std * rng.standard_normal(n))))
    elif method == "uniform":
        t = rng.random(n)
    else:
        raise TrainConfigError(f"flow.timestep_sampling={method!r}: expected logit-normal or uniform")
    return np.clip(t, T_EPS, 1.0 - T_EPS).astype(np.float32)


@dataclass
class Draws:
    """One micro-batch's random inputs, already sliced to this rank's rows."""

    t: np.ndarray
    drop: np.ndarray
    noise_rng: np.random.Generator
    eps_rng: np.random.Generator
    rank: int
    world: int
    global_batch: int

    def noise(self, shape: tuple[int, ...]) -> np.ndarray:
        full = self.noise_rng.standard_normal((self.global_batch, *shape), dtype=np.float32)
        return engine.rank_slice(full, self.rank, self.world)

    def eps(self, shape: tuple[int, ...]) -> np.ndarray:
        full = self.eps_rng.standard_normal((self.global_batch, *shape), dtype=np.float32)
        return engine.rank_slice(full, self.rank, self.world)


def draw_step(
    cfg: TransformerTrainConfig, step: int, micro: int, batch: int, ctx: mp.ParallelContext
) -> Draws:
    """t, text dropout and generators for the noise of micro-batch `micro` of optimizer step `step`."""
    rng = engine.step_rng(cfg.train.seed, step, micro, 0)
    world, rank = ctx.data_world, ctx.data_rank
    total = batch * world
    flow = cfg.flow
    t = draw_timesteps(rng, total, flow.timestep_sampling, flow.logit_mean, flow.logit_std)
    drop = rng.random(total) < flow.text_dropout
    return Draws(
        t=engine.rank_slice(t, rank, world),
        drop=engine.rank_slice(drop, rank, world),
        noise_rng=engine.step_rng(cfg.train.seed, step, micro, 1),
        eps_rng=engine.step_rng(cfg.train.seed, step, micro, 2),
        rank=rank,
        world=world,
        global_batch=total,
    )


# -- data ------------------------------------------------------------------------------------------------------


def make_dataset(
    cfg: TransformerTrainConfig,
    manifest: str,
    latent_cache: str | None,
    text: TextSource,
    buckets: BucketConfig,
) -> VideoDataset:
    data = cfg.data
    return VideoDataset(
        manifest,
        data.root,
        num_frames=data.frames,
        stride=data.stride,
        size=tuple(data.size),
        random_crop=data.random_crop,
        hflip=data.hflip,
        buckets=buckets,
        text_cache=text.store,
        latent_cache=LatentStore(latent_cache, memory_mb=data.cache_memory_mb) if latent_cache else None,
        seed=cfg.train.seed,
    )


def captions_of(dataset: VideoDataset, indices: np.ndarray) -> list[str]:
    return [dataset.row(int(i)).caption or "" for i in indices]


# -- the model and its export ----------------------------------------------------------------------------------


def build_transformer(cfg: TransformerTrainConfig, config: TransformerConfig) -> MovieGenTransformer:
    """A fresh model (seeded init) or the `init_from` model with its position tables resized to `config`."""
    ms.set_seed(cfg.train.seed)  # MovieGenTransformer initialises from MindSpore's global seed
    if cfg.model.init_from:
        source = paths.resolve_model_dir(cfg.model.init_from, "transformer")
        return MovieGenTransformer.from_pretrained(source, **dict(cfg.model.overrides))
    return MovieGenTransformer(config)


def export_model(config: TransformerConfig, arrays: dict[str, np.ndarray]) -> MovieGenTransformer:
    """A plain (unparallelised) model holding `arrays`, for saving."""
    model = MovieGenTransformer(config)
    load_state_dict(model, arrays, strict=True, source="final weights")
    return model


def write_pipeline(
    path: Path, transformer: MovieGenTransformer, tae: TemporalAutoencoder, info: PipelineInfo
):
    """`MovieGenPipeline.save_pretrained` without loading the text encoders (only their spec is written; real
    encoders can be many GB). The folder loads with `MovieGenPipeline.from_pretrained`, which checks them."""
    MovieGenPipeline.save_pretrained(SimpleNamespace(transformer=transformer, tae=tae, info=info), path)


# -- the loop ----------------------------------------------------------------------------------------------------


class Validator:
    """Mean rectified-flow loss on the first `val_batches` batches of the validation set at the fixed times
    linspace(0, 1, n + 2)[1:-1], with noise fixed by (seed, batch, time) and no text dropout."""

    def __init__(self, cfg, ctx, dataset, text: TextSource, latents: LatentSource, loss_fn):
        self.cfg, self.ctx, self.dataset, self.text, self.latents, self.loss_fn = (
            cfg,
            ctx,
            dataset,
            text,
            latents,
            loss_fn,
        )
        sampler = BucketBatchSampler(
            dataset.assignment,
            seed=cfg.train.seed,
            rank=ctx.data_rank,
            world_size=ctx.data_world,
            shuffle=False,
            drop_last=False,
            warn=False,
        )
        self.plan = [indices for _, indices in zip(range(cfg.train.val_batches), sampler, strict=False)]
        n = cfg.flow.val_timesteps
        self.times = np.linspace(0.0, 1.0, n + 2)[1:-1].astype(np.float32)

    def __call__(self) -> float:
        seed, world, rank = self.cfg.train.seed, self.ctx.data_world, self.ctx.data_rank
        total, count = 0.0, 0
        for b, indices in enumerate(self.plan):
            batch = collate([self.dataset.get(i, epoch=0) for i in indices])
            size = len(indices)

            def fixed(k: int, shape: tuple[int, ...], b: int = b, size: int = size) -> np.ndarray:
                rng = np.random.default_rng([seed, VAL_STREAM, b, k])
                full = rng.standard_normal((size * world, *shape), dtype=np.float32)
                return engine.rank_slice(full, rank, world)

            latents = self.latents.latents(batch, lambda shape: fixed(len(self.times), shape))
            embs, masks = self.text.embeddings(batch, captions_of(self.dataset, batch["index"]))
            for k, t in enumerate(self.times):
                noise = Tensor(fixed(k, tuple(latents.shape[1:])))
                loss = self.loss_fn(latents, embs, masks, Tensor(np.full(size, t, np.float32)), noise)
                total += float(loss.asnumpy())
                count += 1
        local = Tensor(np.float32(total / max(count, 1)))
        if self.ctx.world_group.size == 1:
            return float(local.asnumpy())
        return (
            float(mp.all_reduce(local.reshape(1), self.ctx.world_group).asnumpy()[0])
            / self.ctx.world_group.size
        )


def _log(ctx: mp.ParallelContext, message: str) -> None:
    if ctx.rank_id == 0:
        print(message, file=sys.stderr, flush=True)


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines past the resumed step (written by the interrupted run after its last checkpoint)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line and json.loads(line).get("step", 0) <= last_step
    ]
    path.write_text("".join(line + "\n" for line in kept))


def run(cfg: TransformerTrainConfig) -> Path:
    """Train the transformer as configured; returns the run directory."""
    check_inputs(cfg)
    check_parallel(cfg, init_distributed()[1])
    ctx = mp.init_parallel(sp=cfg.parallel.sp)
    precision = resolve_precision(cfg.train.precision)
    out = Path(cfg.train.output_dir)
    buckets = training_buckets(cfg.data)

    # Inputs: text and latent sources, then the model whose text encoders and channels they fix.
    text = TextSource(cfg)
    latents = LatentSource(cfg)
    config = preset_config(cfg, text.dims, latents.channels)
    check_model_fits(config, buckets, cfg.parallel.sp, "model")
    text.use(config.text_encoders)
    dataset = make_dataset(cfg, cfg.data.manifest, cfg.latent_cache, text, buckets)
    sampler = BucketBatchSampler(
        dataset.assignment,
        seed=cfg.train.seed,
        rank=ctx.data_rank,
        world_size=ctx.data_world,
        image_ratio=cfg.data.image_ratio,
    )
    keys = [latents.key, *text.batch_keys(), "index", "fps"]
    loader = BatchLoader(dataset, sampler, keys, num_workers=cfg.train.num_workers)
    validator_data = None
    if cfg.data.val_manifest:
        val_cache = cfg.val_latent_cache or cfg.latent_cache
        validator_data = make_dataset(cfg, cfg.data.val_manifest, val_cache, text, buckets)

    model = build_transformer(cfg, config)
    model.set_gradient_checkpointing(cfg.train.gradient_checkpointing)
    parallelize_transformer(model, ctx)
    apply_precision(model, precision)
    zero, optimizer = engine.build_optimizer(model, cfg.optim, ctx, zero_stage=cfg.parallel.zero_stage)
    ema = EMA(zero.params, cfg.optim.ema_decay, jit=cfg.train.jit) if cfg.optim.ema_decay else None
    stepper = engine.OptimizerStep(zero, optimizer, cfg.optim, cfg.train.steps, ctx, ema)
    grad_step, eval_loss = make_step_functions(
        model, text.null(), cfg.flow.sigma_min, zero.params, cfg.train.jit
    )
    validate = (
        Validator(cfg, ctx, validator_data, text, latents, eval_loss) if validator_data is not None else None
    )

    # Resume.
    manager = CheckpointManager(out / paths.CHECKPOINTS, keep_last=cfg.train.keep_last)
    engine.write_run_config(out, cfg, ctx)
    start = 0
    resume_from = engine.resolve_resume(cfg.train.resume, manager)
    if resume_from is not None:
        state = engine.restore_training_checkpoint(resume_from, model, stepper, ctx)
        loader.load_state_dict(state["sampler"])
        start = int(state["step"])
        _log(ctx, f"resumed from {resume_from} at step {start}")
    metrics_path = out / paths.METRICS
    if ctx.rank_id == 0:
        _trim_metrics(metrics_path, start)
    progress = Progress(
        cfg.train.steps,
        "train",
        metrics_path if ctx.rank_id == 0 else None,
        start=start,
        every=cfg.train.log_every,
        stream=None if ctx.rank_id == 0 else open(os.devnull, "w"),  # noqa: SIM115 (process lifetime)
    )
    _log(
        ctx,
        f"transformer: {sum(p.size for p in model.get_parameters()) / 1e6:.2f}M parameters ({config.num_layers} "
        f"layers, hidden {config.hidden_size}, {config.num_heads} heads, position tables "
        f"{list(config.pos_embed_max_size)}, text {dict(config.text_dims)}); world {ctx.world_size}, sp "
        f"{cfg.parallel.sp}, ZeRO {cfg.parallel.zero_stage}, jit {cfg.train.jit}, {precision}",
    )
    _log(ctx, sampler.report())

    def save(step: int) -> Path | None:
        state = {"sampler": loader.state_dict(), "seed": cfg.train.seed}
        return engine.save_training_checkpoint(manager, step, model, stepper, ctx, state)

    def forward_backward(batch: dict, step: int, micro: int):
        draws = draw_step(cfg, step, micro, len(batch["index"]), ctx)
        x0 = latents.latents(batch, draws.eps)
        embs, masks = text.embeddings(batch, captions_of(dataset, batch["index"]))
        noise = Tensor(draws.noise(tuple(x0.shape[1:])))
        return grad_step(x0, embs, masks, Tensor(draws.t), noise, Tensor(draws.drop))

    fps_seen: list[float] = []
    batches = iter(loader)
    step = start
    saved_at = start if resume_from is not None else -1
    stopped = None
    validating = validate is not None and cfg.train.val_every > 0
    with StopRequest() as stop:
        try:
            if validating and start == 0:  # the untrained model's validation loss: the baseline of the curve
                progress.update(0, val_loss=validate(), lr=stepper.lr_at(0), lr_reduced=0)
            while step < cfg.train.steps:
                grad_sum, loss_sum = None, None
                for micro in range(cfg.optim.grad_accum):
                    batch = next(batches)
                    fps_seen.extend(float(v) for v in batch["fps"] if v > 0)
                    loss, grads = forward_backward(batch, step, micro)
                    grad_sum = engine.add_grads(grad_sum, grads)
                    loss_sum = loss if loss_sum is None else loss_sum + loss
                result = stepper(grad_sum, loss_sum, cfg.optim.grad_accum, step)
                step += 1
                progress.update(
                    step,
                    loss=result.loss,
                    lr=result.lr,
                    grad_norm=result.grad_norm,
                    skipped=int(not result.applied),
                )
                stepper.check_nonfinite(cfg.train.max_nonfinite_steps)  # raises before anything is saved
                if validating and step % cfg.train.val_every == 0:
                    val_loss = validate()
                    reduced = stepper.plateau.observe(val_loss) if stepper.plateau else False
                    progress.update(step, val_loss=val_loss, lr=stepper.lr_at(step), lr_reduced=int(reduced))
                    if reduced:
                        _log(ctx, f"validation loss plateaued: LR scale now {stepper.plateau.scale:g}")
                requested = _stop_everywhere(bool(stop), ctx)
                if step % cfg.train.save_every == 0 or step == cfg.train.steps or requested:
                    save(step)
                    saved_at = step
                if requested:
                    stopped = stop.signal_name or "a stop request on another rank"
                    break
        finally:
            progress.close()
    if stopped is not None:
        _log(ctx, f"stopped by {stopped} at step {step}; checkpoint saved. Run the same command to resume.")
        return out
    if saved_at != step:
        save(step)
    finish(cfg, out, model, stepper, ctx, text, latents, dataset, pipeline_fps(cfg, fps_seen, dataset))
    return out


def pipeline_fps(cfg: TransformerTrainConfig, seen: Sequence[float], dataset: VideoDataset) -> float:
    """Frame rate for the pipeline: `cfg.fps`, else the trained clips' (median), else the manifest's, else 16."""
    if cfg.fps:
        return float(cfg.fps)
    if seen:
        return float(np.median(seen))
    listed = [row.fps for row in dataset.manifest.rows if row.fps]
    return float(np.median(listed)) / cfg.data.stride if listed else 16.0


def _stop_everywhere(local: bool, ctx: mp.ParallelContext) -> bool:
    """True on every rank when any rank got SIGTERM / Ctrl-C (so all of them checkpoint together)."""
    if ctx.world_group.size == 1:
        return local
    flag = mp.all_reduce(Tensor(np.array([1.0 if local else 0.0], np.float32)), ctx.world_group)
    return float(flag.asnumpy()[0]) > 0


def make_step_functions(
    model: MovieGenTransformer,
    null_text: tuple[Sequence[np.ndarray], Sequence[np.ndarray]],
    sigma_min: float,
    params,
    jit: bool,
):
    """(grad_step, eval_loss): the rectified-flow loss for given latents, text, t, noise and text-dropout flags,
    forward+backward returning (loss, grads w.r.t. `params`), and the forward alone without dropout; both
    compiled with `mindspore.jit` when `jit` (the optimizer step stays eager; AdamW's update is its own graph).

    The loss is `mg_transformer`'s `drop_text` + `rectified_flow_loss` called on the model directly: wrapping
    the model in a cell (`RectifiedFlowLoss`) would make MindSpore prefix its parameter names with `model.`,
    and the checkpoints must keep the plain model's names."""
    null_embs = tuple(Tensor(e, ms.float32) for e in null_text[0])
    null_masks = tuple(Tensor(m, ms.float32) for m in null_text[1])

    def train_loss(latents, embs, masks, t, noise, drop):
        embs, masks = drop_text(embs, masks, null_embs, null_masks, drop)
        return rectified_flow_loss(model, latents, embs, masks, t, noise, sigma_min)

    def eval_loss(latents, embs, masks, t, noise):
        return rectified_flow_loss(model, latents, embs, masks, t, noise, sigma_min)

    grad_step = ms.value_and_grad(train_loss, None, params)
    if not jit:
        return grad_step, eval_loss
    compiled_grad, compiled_eval = ms.jit(grad_step), ms.jit(eval_loss)

    # Tuples of tensors are compile-time constants to `jit` unless marked mutable (one compile per step else).
    def jit_grad_step(latents, embs, masks, t, noise, drop):
        return compiled_grad(latents, ms.mutable(tuple(embs)), ms.mutable(tuple(masks)), t, noise, drop)

    def jit_eval_loss(latents, embs, masks, t, noise):
        return compiled_eval(latents, ms.mutable(tuple(embs)), ms.mutable(tuple(masks)), t, noise)

    return jit_grad_step, jit_eval_loss


def finish(
    cfg, out, model, stepper, ctx, text: TextSource, latents: LatentSource, dataset, fps: float
) -> None:
    """Write `transformer/` (EMA weights when EMA is on) and, when the TAE and text encoders are known,
    `pipeline/`. Every rank takes part in gathering the weights; rank 0 writes."""
    arrays = mp.gather_full_state(model, ctx)
    if stepper.ema is not None:
        arrays.update(engine.ema_full_state(stepper.ema, ctx))
    if ctx.rank_id != 0:
        return
    final = export_model(model.config, arrays)
    final.save_pretrained(out / paths.TRANSFORMER_DIR)
    written = [str(out / paths.TRANSFORMER_DIR)]
    if latents.tae is not None and text.spec is not None:
        captions = []
        for row in dataset.manifest.rows:
            if row.caption and row.caption not in captions:
                captions.append(row.caption)
            if len(captions) == EXAMPLE_PROMPTS:
                break
        info = PipelineInfo(
            fps=fps,
            frames=cfg.data.frames,
            size=tuple(int(v) for v in cfg.data.size),
            text=text.spec,
            example_prompts=captions,
        )
        write_pipeline(out / paths.PIPELINE_DIR, final, latents.tae, info)
        written.append(str(out / paths.PIPELINE_DIR))
    else:
        missing = "the TAE" if latents.tae is None else "the text encoders"
        _log(
            ctx,
            f"no pipeline/ written: {missing} unknown (set `tae`, or use caches whose meta.json names them)",
        )
    _log(ctx, "wrote " + ", ".join(written))
