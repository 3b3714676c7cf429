"""`mg-train train`: the Movie Gen transformer as a task of the one training engine (`engine.train`), for any
stage, in one process or under msrun.

Inputs (`sources`): latents from a latent cache (scaled with the cache's factors) or encoded from pixels by a
frozen TAE; text embeddings from a text cache or computed online by the text encoders. The model is a preset
(with overrides) or a previous stage's transformer (`model.init_from`, position tables resized); its widths,
channels and the shapes it must fit come from the text source, the latent source (TAE compression) and its own
config. Objective: rectified flow (mg-transformer's `drop_text` + `rectified_flow_loss`). Every random draw of
a step (timesteps from mg-transformer's `sample_timesteps`, noise, text dropout, TAE posterior noise) comes from
`draws.step_rng(seed, step, micro, stream)` for the global batch, each rank keeping its rows, so a resumed run
equals an uninterrupted one and N data-parallel ranks equal one process with an N times larger batch.
Parallelism (data parallel, ZeRO-1/2/3, Ulysses sequence parallel) is applied in
`parallel_plan.parallelize_transformer` and by the engine's optimizer.

Run directory: config.yaml, metrics.jsonl, checkpoints/step_*, and at the end `transformer/` (EMA weights when
EMA is on) and `pipeline/` (when the TAE and the text encoders are known).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn

import mg_parallel as mp
from mg_data import BucketBatchSampler, BucketConfig, VideoDataset, collate
from mg_data.atomic import atomic_dir
from mg_data.caches import LatentStore
from mg_parallel.groups import init_distributed
from mg_parallel.sharded import ShardSpec, read_piece
from mg_train import engine, paths
from mg_train.checkpoint import Checkpoint
from mg_train.config.loader import ConfigError
from mg_train.config.schema import DataConfig, TransformerTrainConfig
from mg_train.draws import rank_slice, step_rng
from mg_train.engine import StepInputs
from mg_train.export import MODEL_FILES, write_model_files
from mg_train.loader import BatchLoader
from mg_train.optim import NO_LR_SCALES
from mg_train.parallel_plan import check_layout, parallelize_transformer
from mg_train.pipeline import PipelineInfo, write_pipeline_folder
from mg_train.runtime import apply_precision, resolve_precision
from mg_train.sources import LatentSource, TextSource
from mg_transformer import (
    MovieGenTransformer,
    TransformerConfig,
    drop_text,
    interpolate,
    rectified_flow_loss,
    sample_timesteps,
    velocity_target,
)
from mg_transformer.pretrained import POSITION_TABLES, WEIGHTS_NAME, resize_position_table

VAL_STREAM = 7919  # seeds the fixed validation noise apart from the training draws
EXAMPLE_PROMPTS = 8  # training captions recorded in pipeline.json


class TrainConfigError(ConfigError):
    """The config or its inputs cannot work; raised before any training work, naming the field."""


# -- checks before any work -----------------------------------------------------------------------------------


def training_buckets(data: DataConfig, multiple: int) -> BucketConfig:
    """The batch shapes of a run: video buckets per aspect ratio at the area of `data.size` (Movie Gen's equal
    token counts) and per duration (`data.durations` frames -> batch size, else `data.frames`), plus image
    buckets for joint image/video training (`image_ratio` > 0, or `image_batch_size` set while `image_ratio` is
    unset); with `frames: 1` (and no durations) image buckets only. Sizes must be
    multiples of `multiple` (the TAE's spatial compression times the patch size), and `data.size` must be the
    bucket of its own aspect ratio."""
    height, width = (int(v) for v in data.size)
    if height % multiple or width % multiple:
        raise TrainConfigError(
            f"data.size={list(data.size)}: height and width must be positive multiples of {multiple} "
            "(the TAE's spatial compression times the transformer's patch size)"
        )
    image_size = data.image_batch_size or data.batch_size
    images_only = data.frames == 1 and not data.durations
    with_images = not images_only and (
        (data.image_ratio is not None and data.image_ratio > 0)
        or (data.image_ratio is None and data.image_batch_size is not None)
    )
    durations = {1: image_size} if images_only else data.video_buckets()
    try:
        buckets = BucketConfig.grid(
            resolution=round(math.sqrt(height * width)),
            aspect_ratios=data.aspect_ratios,
            num_frames=list(durations),
            batch_size=durations,
            image_batch_size=image_size if with_images else None,
            multiple_of=multiple,
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


def latent_grid(
    config: TransformerConfig, frames: int, height: int, width: int, compression: tuple[int, int]
) -> tuple[int, int, int]:
    """Patches (t, h, w) of one sample of `frames` x `height` x `width` pixels, for a TAE compressing
    (temporal, spatial)."""
    t, s = compression
    return config.patch_grid((-(-frames // t), height // s, width // s))


def check_model_fits(
    config: TransformerConfig,
    buckets: BucketConfig,
    compression: tuple[int, int],
    degrees: dict[str, int],
    where: str,
    tp_sequence_parallel: bool = True,
) -> None:
    """Every bucket's patch grid fits the position tables, the layout `degrees` splits the model, and every
    bucket's token count divides by the sequence shards."""
    try:
        check_layout(config, degrees, tp_sequence_parallel=tp_sequence_parallel)
    except ValueError as exc:
        raise TrainConfigError(str(exc)) from None
    for bucket in buckets.buckets:
        try:
            grid = latent_grid(config, bucket.num_frames, bucket.height, bucket.width, compression)
        except ValueError as exc:
            raise TrainConfigError(f"{where}: bucket {bucket.name}: {exc}") from None
        if any(g > m for g, m in zip(grid, config.pos_embed_max_size, strict=True)):
            raise TrainConfigError(
                f"{where}: bucket {bucket.name} needs {grid} (t, h, w) patches but pos_embed_max_size is "
                f"{list(config.pos_embed_max_size)}; raise model.overrides.pos_embed_max_size (tables are "
                "resized when loading model.init_from)"
            )
        try:
            check_layout(config, degrees, math.prod(grid), tp_sequence_parallel)
        except ValueError as exc:
            raise TrainConfigError(f"{where}: bucket {bucket.name}: {exc}") from None


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
    """Value ranges (the schema's `check`), then the files and folders the run needs; raises ConfigError naming
    the field."""
    cfg.check()

    def need(path: str | None, field: str, what: str) -> None:
        if not path:
            raise TrainConfigError(f"{field} is not set: {what}")
        if not Path(path).exists():
            raise TrainConfigError(f"{field}={path}: no such file or folder ({what})")

    need(cfg.data.manifest, "data.manifest", "the CSV manifest of the training data")
    if cfg.data.val_manifest:
        need(cfg.data.val_manifest, "data.val_manifest", "the CSV manifest of the validation data")
    if cfg.latent_cache:
        need(cfg.latent_cache, "latent_cache", "a latent cache from `mg-train cache-latents`")
    elif not cfg.tae:
        raise TrainConfigError("set latent_cache (cached latents) or tae (a TAE to encode pixels with)")
    if cfg.val_latent_cache:
        need(cfg.val_latent_cache, "val_latent_cache", "the latent cache of the validation manifest")
    for path, kind, field, what in (
        (cfg.tae, "tae", "tae", "a TAE folder or tae-train run directory"),
        (
            cfg.model.init_from,
            "transformer",
            "model.init_from",
            "the previous stage's run or transformer folder",
        ),
    ):
        if path:
            need(path, field, what)
            try:
                paths.resolve_model_dir(path, kind)
            except FileNotFoundError as exc:
                raise TrainConfigError(f"{field}: {exc}") from None
    if cfg.text_cache:
        need(cfg.text_cache, "text_cache", "a text-embedding cache from `mg-train cache-text`")
    elif not cfg.text.encoders:
        raise TrainConfigError("set text_cache or text.encoders")
    if cfg.train.resume not in (None, "auto"):
        need(cfg.train.resume, "train.resume", "a checkpoint or a run directory with checkpoints")
    try:
        resolve_precision(cfg.train.precision)
    except ValueError as exc:
        raise TrainConfigError(str(exc)) from None


def check_parallel(cfg: TransformerTrainConfig, world_size: int) -> dict[str, int]:
    """The layout's degrees {dp, cp, sp, tp} for this job; raises naming the fields when they do not fit."""
    return cfg.parallel.degrees(world_size)


# -- random draws ----------------------------------------------------------------------------------------------


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
        return rank_slice(full, self.rank, self.world)

    def eps(self, shape: tuple[int, ...]) -> np.ndarray:
        full = self.eps_rng.standard_normal((self.global_batch, *shape), dtype=np.float32)
        return rank_slice(full, self.rank, self.world)


def draw_step(
    cfg: TransformerTrainConfig, step: int, micro: int, batch: int, ctx: mp.ParallelContext
) -> Draws:
    """t, text dropout and generators for the noise of micro-batch `micro` of optimizer step `step`."""
    rng = step_rng(cfg.train.seed, step, micro, 0)
    world, rank = ctx.data_world, ctx.data_rank
    total = batch * world
    flow = cfg.flow
    t = sample_timesteps(total, flow.timestep_sampling, flow.logit_mean, flow.logit_std, rng=rng).asnumpy()
    drop = rng.random(total) < flow.text_dropout
    return Draws(
        t=rank_slice(t, rank, world),
        drop=rank_slice(drop, rank, world),
        noise_rng=step_rng(cfg.train.seed, step, micro, 1),
        eps_rng=step_rng(cfg.train.seed, step, micro, 2),
        rank=rank,
        world=world,
        global_batch=total,
    )


# -- data, model and export ------------------------------------------------------------------------------------


def make_dataset(
    cfg: TransformerTrainConfig,
    manifest: str,
    latent_cache: str | None,
    text: TextSource,
    buckets: BucketConfig,
    compression: tuple[int, int],
    **options,
) -> VideoDataset:
    """The dataset of a manifest; `options` are further VideoDataset arguments (PT2V's reference images)."""
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
        temporal_compression=compression[0],
        spatial_compression=compression[1],
        seed=cfg.train.seed,
        **options,
    )


def captions_of(dataset: VideoDataset, indices: np.ndarray) -> list[str]:
    return [dataset.row(int(i)).caption or "" for i in indices]


def initial_pieces(
    cfg: TransformerTrainConfig,
    config: TransformerConfig,
    params: dict[str, Parameter],
    ctx: mp.ParallelContext,
    adapt=None,
) -> Iterator[tuple[Parameter, np.ndarray]]:
    """(parameter, this rank's piece of its initial value), one parameter at a time: from the seed (the values
    one process initialises with that seed) or from the `init_from` model's safetensors, read slice by slice
    (position tables whole: they are resized to `config`). No rank holds more than one full tensor.
    `adapt(name, stored, shape)` may turn a stored tensor of another shape into the model's (e.g. Edit widens the
    T2V patch embedding with zero columns); it returns None where it does not apply."""
    if not cfg.model.init_from:
        for name, full in MovieGenTransformer.lazy(config).initial_values(cfg.train.seed):
            yield params[name], ShardSpec.of(params[name]).cut(full, ctx.layout, ctx.rank_id)
        return
    from safetensors import safe_open

    source = paths.resolve_model_dir(cfg.model.init_from, "transformer") / WEIGHTS_NAME
    with safe_open(str(source), framework="np") as handle:
        stored = set(handle.keys())
        missing, unexpected = sorted(set(params) - stored), sorted(stored - set(params))
        if missing or unexpected:
            raise TrainConfigError(
                f"model.init_from: {source} does not fit the model: missing {missing[:10]}, unexpected "
                f"{unexpected[:10]}"
            )
        for name, param in params.items():
            spec = ShardSpec.of(param)
            shape = tuple(handle.get_slice(name).get_shape())
            adapted = (
                adapt(name, handle.get_tensor(name), spec.full_shape)
                if adapt is not None and shape != spec.full_shape
                else None
            )
            if name in POSITION_TABLES and shape != spec.full_shape:
                full = resize_position_table(handle.get_tensor(name), spec.full_shape[0])
                yield param, spec.cut(full.astype(np.float32), ctx.layout, ctx.rank_id)
            elif adapted is not None:
                yield param, spec.cut(adapted.astype(np.float32), ctx.layout, ctx.rank_id)
            elif shape != spec.full_shape:
                raise TrainConfigError(
                    f"model.init_from: {source}: {name} has shape {shape}, the model expects {spec.full_shape}"
                )
            else:
                yield param, read_piece(handle, name, spec, ctx.layout, ctx.rank_id)


def pipeline_fps(cfg: TransformerTrainConfig, seen: Sequence[float], dataset: VideoDataset) -> float:
    """Frame rate for the pipeline: `cfg.fps`, else the trained clips' (median), else the manifest's, else 16."""
    if cfg.fps:
        return float(cfg.fps)
    if seen:
        return float(np.median(seen))
    listed = [row.fps for row in dataset.manifest.rows if row.fps]
    return float(np.median(listed)) / cfg.data.stride if listed else 16.0


# -- the task ----------------------------------------------------------------------------------------------------


class Validator:
    """Mean rectified-flow loss on the first `val_batches` batches of the validation set at the fixed times
    linspace(0, 1, n + 2)[1:-1], with noise fixed by (seed, batch, time) and no text dropout. `extra(batch)`
    gives the loss's further arguments (PT2V's reference images)."""

    def __init__(self, cfg, ctx, dataset, text: TextSource, latents: LatentSource, loss_fn, extra=None):
        self.cfg, self.ctx, self.dataset, self.text, self.latents, self.loss_fn = (
            cfg,
            ctx,
            dataset,
            text,
            latents,
            loss_fn,
        )
        self.extra = extra or (lambda batch: ())
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
                return rank_slice(full, rank, world)

            latents = self.latents.latents(batch, lambda shape: fixed(len(self.times), shape))
            embs, masks = self.text.embeddings(batch, captions_of(self.dataset, batch["index"]))
            extra = self.extra(batch)
            for k, t in enumerate(self.times):
                noise = Tensor(fixed(k, tuple(latents.shape[1:])))
                times = Tensor(np.full(size, t, np.float32))
                loss = self.loss_fn(latents, embs, masks, times, noise, *extra)
                total += float(loss.asnumpy())
                count += 1
        return engine.global_mean(float(np.float32(total / max(count, 1))), self.ctx)


def rectified_flow_losses(model: MovieGenTransformer, null_text, sigma_min: float):
    """(train_loss, eval_loss): the rectified-flow loss for given latents, text, t, noise (and text-dropout
    flags, replacing dropped captions by the empty prompt), called on the model directly: wrapping it in a cell
    would make MindSpore prefix its parameter names, and checkpoints keep the plain model's names."""
    null_embs = tuple(Tensor(e, ms.float32) for e in null_text[0])
    null_masks = tuple(Tensor(m, ms.float32) for m in null_text[1])

    def train_loss(latents, embs, masks, t, noise, drop):
        embs, masks = drop_text(embs, masks, null_embs, null_masks, drop)
        return rectified_flow_loss(model, latents, embs, masks, t, noise, sigma_min)

    def eval_loss(latents, embs, masks, t, noise):
        return rectified_flow_loss(model, latents, embs, masks, t, noise, sigma_min)

    return train_loss, eval_loss


def conditioned_losses(model: nn.Cell, null_text, sigma_min: float):
    """(train_loss, eval_loss) of a model that takes two inputs after the text (PT2V: reference pixels and keep
    flags; Edit: condition latents and task indices): `rectified_flow_losses` with those two as the last
    arguments. Text dropout replaces the text only."""
    null_embs = tuple(Tensor(e, ms.float32) for e in null_text[0])
    null_masks = tuple(Tensor(m, ms.float32) for m in null_text[1])

    def eval_loss(latents, embs, masks, t, noise, first, second):
        x_t = interpolate(latents, noise, t, sigma_min)
        prediction = model(x_t, t, embs, masks, first, second)
        target = velocity_target(latents, noise, sigma_min)
        return mint.mean(mint.square(prediction.astype(ms.float32) - target.astype(ms.float32)))

    def train_loss(latents, embs, masks, t, noise, drop, first, second):
        embs, masks = drop_text(embs, masks, null_embs, null_masks, drop)
        return eval_loss(latents, embs, masks, t, noise, first, second)

    return train_loss, eval_loss


def init_from_folder(cfg: TransformerTrainConfig, run_subdir: str, is_folder) -> Path | None:
    """The model folder `model.init_from` names when `is_folder(candidate)` holds for it, its
    `<run>/<run_subdir>/` or its `<run>/pipeline/` (a PT2V or edit model), else None."""
    if not cfg.model.init_from:
        return None
    path = Path(cfg.model.init_from)
    for candidate in (path, path / run_subdir, path / paths.PIPELINE_DIR):
        if is_folder(candidate):
            return candidate
    return None


class TransformerTask:
    """The Movie Gen transformer for `engine.train`: sources, model, loss, validation and export."""

    name = "train"
    aux_names = ()
    lr_scales = NO_LR_SCALES

    def __init__(self, cfg: TransformerTrainConfig, ctx: mp.ParallelContext):
        self.config, self.run, self.optim, self.ctx = cfg, cfg.train, cfg.optim, ctx
        self.zero_stage = cfg.parallel.zero_stage
        degrees = {axis: ctx.size(axis) for axis in ("dp", "cp", "sp", "tp")}
        self.text = TextSource(cfg)
        self.latents = LatentSource(cfg)
        self.model_config = self.configure_model()
        compression = self.latents.compression
        multiple = compression[1] * math.lcm(*self.model_config.patch_size[1:])
        buckets = training_buckets(cfg.data, multiple)
        tp_seq = cfg.parallel.tp_sequence_parallel
        check_model_fits(self.model_config, buckets, compression, degrees, "model", tp_seq)
        self.text.use(self.model_config.text_encoders)
        options = self.dataset_options()
        self.dataset = make_dataset(
            cfg, cfg.data.manifest, cfg.latent_cache, self.text, buckets, compression, **options
        )
        sampler = BucketBatchSampler(
            self.dataset.assignment,
            seed=cfg.train.seed,
            rank=ctx.data_rank,
            world_size=ctx.data_world,
            image_ratio=cfg.data.image_ratio,
        )
        keys = [self.latents.key, *self.text.batch_keys(), "index", "fps", "substituted", *self.extra_keys()]
        self.loader = BatchLoader(self.dataset, sampler, keys, num_workers=cfg.train.num_workers)

        ms.set_seed(cfg.train.seed)
        self.model = self.build_model()  # no memory yet: `initialize` writes pieces
        self.transformer.set_gradient_checkpointing(cfg.train.gradient_checkpointing)
        parallelize_transformer(self.transformer, ctx, tp_seq)
        if self.model is not self.transformer:  # a wrapper (PT2V, Edit): its checkpoints name `transformer.*`
            for path, param in self.transformer.parameters_and_names():
                param.name = f"transformer.{path}"  # the cut layers' new parameters lose the prefix otherwise
        self.precision = resolve_precision(cfg.train.precision)
        apply_precision(self.model, self.precision)
        self.loss, eval_loss = self.losses()
        self.validator = None
        if cfg.data.val_manifest:
            val_cache = cfg.val_latent_cache or cfg.latent_cache
            val_data = make_dataset(
                cfg, cfg.data.val_manifest, val_cache, self.text, buckets, compression, **options
            )
            self.validator = Validator(
                cfg,
                ctx,
                val_data,
                self.text,
                self.latents,
                engine.compile_fn(eval_loss, cfg.train.compiles_step),
                self.validation_inputs,
            )
        self.fps_seen: list[float] = []

    # -- what a conditioned variant (PT2V, Edit) changes ---------------------------------------------------------

    def configure_model(self) -> TransformerConfig:
        """The T2V transformer config of the run (its shapes are checked against the buckets and the layout)."""
        return preset_config(self.config, self.text.dims, self.latents.channels)

    def dataset_options(self) -> dict:
        """Further VideoDataset arguments."""
        return {}

    def extra_keys(self) -> list[str]:
        """Further batch keys the loss needs."""
        return []

    def build_model(self) -> nn.Cell:
        """The trained model, built lazily; `self.transformer` is its MovieGenTransformer."""
        self.transformer = MovieGenTransformer.lazy(self.model_config)
        return self.transformer

    def losses(self):
        """(train loss, validation loss) called with `inputs(...).args` / (latents, text, t, noise, *extra)."""
        return rectified_flow_losses(self.model, self.text.null(), self.config.flow.sigma_min)

    def extra_inputs(self, batch: dict, step: int, micro: int) -> tuple:
        """Further training-loss arguments of one micro-batch, after the text-dropout flags."""
        return ()

    def validation_inputs(self, batch: dict) -> tuple:
        """Further validation-loss arguments of one batch."""
        return ()

    def initialize(self) -> None:
        """Write this rank's pieces of the initial weights (after every parallel cut, ZeRO-3 included)."""
        params = {p.name: p for p in self.model.get_parameters()}
        for param, piece in initial_pieces(self.config, self.model_config, params, self.ctx):
            param.set_data(Tensor(np.ascontiguousarray(piece).reshape(param.shape), param.dtype))

    def inputs(self, batch: dict, step: int, micro: int) -> StepInputs:
        self.fps_seen.extend(float(v) for v in batch["fps"] if v > 0)
        draws = draw_step(self.config, step, micro, len(batch["index"]), self.ctx)
        x0 = self.latents.latents(batch, draws.eps)
        embs, masks = self.text.embeddings(batch, captions_of(self.dataset, batch["index"]))
        noise = Tensor(draws.noise(tuple(x0.shape[1:])))
        args = (
            x0,
            embs,
            masks,
            Tensor(draws.t),
            noise,
            Tensor(draws.drop),
            *self.extra_inputs(batch, step, micro),
        )
        return StepInputs(args, {"latent_frames": int(x0.shape[2])})

    def pipeline_info(self) -> PipelineInfo:
        """What the exported pipeline records: frame rate, training frames and size, text encoders, the first
        distinct training captions as example prompts."""
        captions = list(dict.fromkeys(row.caption for row in self.dataset.manifest.rows if row.caption))
        return PipelineInfo(
            fps=pipeline_fps(self.config, self.fps_seen, self.dataset),
            frames=self.config.data.frames,
            size=tuple(int(v) for v in self.config.data.size),
            text=self.text.spec,
            example_prompts=captions[:EXAMPLE_PROMPTS],
        )

    def validate(self) -> dict[str, float] | None:
        return {"val_loss": self.validator()} if self.validator is not None else None

    def describe(self) -> list[str]:
        config, cfg = self.model_config, self.config
        return [
            f"transformer: {sum(p.size for p in self.model.get_parameters()) / 1e6:.2f}M parameters "
            f"({config.num_layers} layers, hidden {config.hidden_size}, {config.num_heads} heads, position "
            f"tables {list(config.pos_embed_max_size)}, text {dict(config.text_dims)}); world "
            f"{self.ctx.world_size} = dp {self.ctx.size('dp')} x cp {self.ctx.size('cp')} x sp {self.ctx.size('sp')} "
            f"x tp {self.ctx.size('tp')}, ZeRO {cfg.parallel.zero_stage}, jit {cfg.train.compiles_step}, "
            f"{self.precision}",
            self.loader.sampler.report(),
        ]

    def model_info(self) -> dict:
        return {"kind": "transformer", "config": self.model_config.to_dict()}

    def export(self, checkpoint: Path, out: Path) -> Path:
        """`transformer/` and, when the TAE and the text encoders are known, `pipeline/`; the weights are
        streamed from the checkpoint one tensor at a time (no full model is built)."""
        opened = Checkpoint.open(checkpoint)
        with atomic_dir(out / paths.TRANSFORMER_DIR, replaces=MODEL_FILES) as tmp:
            write_model_files(tmp, opened)
        written = self.write_pipeline(out, out / paths.TRANSFORMER_DIR)
        return out if written else out / paths.TRANSFORMER_DIR

    def write_pipeline(self, out: Path, transformer_dir: Path, extra: Sequence[Path] = ()) -> bool:
        """`<out>/pipeline/` from an exported transformer folder (plus `extra` parts of a PT2V or edit model) when
        the TAE and the text encoders are known; else says why not and returns False."""
        if self.latents.tae is None or self.text.spec is None:
            missing = "the TAE" if self.latents.tae is None else "the text encoders"
            print(
                f"no pipeline/ written: {missing} unknown (set `tae`, or use caches whose meta.json names them)",
                file=sys.stderr,
            )
            return False
        write_pipeline_folder(
            out / paths.PIPELINE_DIR, transformer_dir, self.latents.tae, self.pipeline_info(), extra=extra
        )
        return True


def run(cfg: TransformerTrainConfig) -> Path:
    """Train the transformer as configured (PT2V when `reference.vision` is set or `model.init_from` is a PT2V
    model: `pt2v_train`; Edit when `editing.tasks` is set or `model.init_from` is an edit model: `edit_train`); returns the run directory. Raises `engine.TrainingStopped` after
    checkpointing when stopped by SIGTERM / Ctrl-C."""
    check_inputs(cfg)
    degrees = check_parallel(cfg, init_distributed()[1])
    ctx = mp.init_parallel(**degrees)
    from mg_train.edit_train import EditTask, is_editing  # they build on this module
    from mg_train.pt2v_train import PT2VTask, is_personalized

    task = EditTask if is_editing(cfg) else PT2VTask if is_personalized(cfg) else TransformerTask
    engine.train(task(cfg, ctx), ctx)
    return Path(cfg.train.output_dir)
