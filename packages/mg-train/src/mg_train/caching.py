"""`mg-train cache-latents` and `mg-train cache-text`: precompute what the transformer trains on.

- Latents: the TAE posterior (mean, std) of every clip's deterministic centre clip, written with mg-data's
  `LatentCacheWriter` (docs/contracts.md section 3) so `VideoDataset(latent_cache=...)` serves them.
- Text: the caption embeddings of every manifest row, written by mg-transformer's `TextEmbedder.write_cache`
  (contracts section 2) under mg-data's `cache_key` of the row, so `VideoDataset(text_cache=...)` finds them.

Both resume: entries already in the cache are skipped, and every entry is written atomically. Under msrun,
cache-latents splits the manifest over the ranks (disjoint keys).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from mindspore import Tensor

import mg_parallel as mp
from mg_data import CacheError, LatentCacheWriter, VideoDataset, cache_key, load_manifest
from mg_parallel.safetensors_io import file_sha256
from mg_tae import TAEConfig, TemporalAutoencoder
from mg_train.config.loader import ConfigError
from mg_train.config.schema import CacheLatentsConfig, CacheTextConfig
from mg_train.paths import resolve_model_dir
from mg_train.progress import Progress


def weights_sha256(model_dir: Path) -> str:
    """SHA-256 of a model folder's weights file (what a latent cache records of the TAE that made it)."""
    return file_sha256(Path(model_dir) / "model.safetensors")


def _check_manifest(path: str) -> None:
    if not path or not Path(path).exists():
        raise ConfigError(f"manifest: CSV manifest (or folder of videos) not found at {path!r}")


def check_latents_config(cfg: CacheLatentsConfig) -> Path:
    """Validate a cache-latents config before any work; returns the TAE folder."""
    if not cfg.checkpoint:
        raise ConfigError("checkpoint is not set: give a TAE folder or a tae-train run directory")
    try:
        model_dir = resolve_model_dir(cfg.checkpoint, "tae")
        factor = TAEConfig.load(model_dir / "config.json").spatial_compression
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"checkpoint: {exc}") from exc
    _check_manifest(cfg.manifest)
    if not cfg.output_dir:
        raise ConfigError("output_dir is not set: give the latent cache folder to write")
    if cfg.frames < 1 or any(v <= 0 or v % factor for v in cfg.size):
        raise ConfigError(
            f"frames={cfg.frames}, size={list(cfg.size)}: need >= 1 frame and positive multiples of {factor}"
        )
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size}: must be at least 1")
    return model_dir


def _latent_writer(cfg: CacheLatentsConfig, config: TAEConfig, model_dir: Path) -> LatentCacheWriter:
    return LatentCacheWriter(
        cfg.output_dir,
        scaling_factor=config.scaling_factor,
        shift_factor=config.shift_factor,
        latent_channels=config.latent_channels,
        frames=cfg.frames,
        size=cfg.size,
        tae=str(model_dir.resolve()),
        temporal_compression=config.temporal_compression,
        spatial_compression=config.spatial_compression,
        tae_sha256=weights_sha256(model_dir),
    )


def cache_latents(cfg: CacheLatentsConfig) -> Path:
    """Encode every clip of the manifest and write the latent cache; returns the cache folder."""
    model_dir = check_latents_config(cfg)
    ctx = mp.init_parallel()
    manifest = load_manifest(cfg.manifest, cfg.root)
    model = TemporalAutoencoder.from_pretrained(model_dir)
    if cfg.tiling:
        model.enable_tiling()
    config = model.config
    try:
        writer = _latent_writer(cfg, config, model_dir)
    except CacheError as exc:  # an existing cache made otherwise (another TAE's weights, frames, size)
        raise ConfigError(f"output_dir: {exc}") from None
    dataset = VideoDataset(manifest, num_frames=cfg.frames, size=cfg.size, start="center")
    keys = [cache_key(row.video, row.latent) for row in manifest.rows]
    mine = range(ctx.data_rank, len(keys), ctx.data_world)
    todo = [i for i in mine if not writer.exists(keys[i])]
    done_before = len(mine) - len(todo)
    progress = Progress(len(todo), "cache-latents", every=max(1, len(todo) // 20))
    if ctx.rank_id == 0:
        progress.log(
            f"cache-latents: {len(keys)} clips, {done_before} already cached on this rank, {len(todo)} to encode "
            f"({cfg.frames} frames at {cfg.size[0]}x{cfg.size[1]}) with {model_dir} into {cfg.output_dir}"
        )
    written, failed, pending = 0, [], []

    def flush() -> None:
        nonlocal written
        if not pending:
            return
        batch = np.stack([video for _, video in pending])
        posterior = model.encode(Tensor(batch))
        mean, std = posterior.mean.asnumpy(), posterior.std.asnumpy()
        for row, (index, _) in enumerate(pending):
            writer.write(keys[index], mean[row], std[row])
        written += len(pending)
        pending.clear()
        progress.update(written + len(failed), written=written, failed=len(failed))

    for i in todo:
        sample = dataset[i]
        if int(sample["index"]) != i:  # a substitute for an unreadable or too short file: never cache it
            failed.append(manifest.rows[i].video)
            warnings.warn(
                f"cache-latents: {manifest.where(i)} ({manifest.rows[i].video}) not cached: "
                f"{dataset.errors.get(i, 'could not be loaded')}",
                stacklevel=2,
            )
            continue
        video = sample["video"]
        if pending and (len(pending) == cfg.batch_size or video.shape != pending[0][1].shape):
            flush()
        pending.append((i, video))
    flush()
    progress.close()
    if ctx.rank_id == 0:
        print(
            f"cache-latents: wrote {written}, skipped {done_before} already cached, {len(failed)} unreadable "
            f"-> {cfg.output_dir}",
            flush=True,
        )
    return Path(cfg.output_dir)


def cache_text(cfg: CacheTextConfig) -> Path:
    """Embed the manifest's captions with the configured text encoders and write the text cache; returns it."""
    _check_manifest(cfg.manifest)
    if not cfg.output_dir:
        raise ConfigError("output_dir is not set: give the text-embedding cache folder to write")
    if cfg.batch_size < 1:
        raise ConfigError(f"batch_size={cfg.batch_size}: must be at least 1")
    if not cfg.text.encoders:
        raise ConfigError("text.encoders is empty: name at least one of ul2, byt5, metaclip")
    manifest = load_manifest(cfg.manifest, require=("video", "caption"))
    from mg_transformer.text import TextEmbedder

    try:
        embedder = TextEmbedder(
            cfg.text.encoders, seed=cfg.text.seed, max_lengths=cfg.text.max_lengths or None
        )
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"text.encoders: {exc}") from exc
    keys = [cache_key(row.video, row.text_emb) for row in manifest.rows]
    prompts = [row.caption or "" for row in manifest.rows]
    print(
        f"cache-text: {len(keys)} captions, encoders {', '.join(embedder.names)} -> {cfg.output_dir}",
        flush=True,
    )
    report = embedder.write_cache(
        cfg.output_dir, keys, prompts, batch_size=cfg.batch_size, dtype=cfg.dtype, skip_existing=True
    )
    written = sum(report.written.values())
    skipped = sum(report.skipped.values())
    print(
        f"cache-text: wrote {written} and kept {skipped} existing entries over {len(embedder.names)} encoders "
        f"in {report.seconds:.1f} s",
        flush=True,
    )
    return Path(cfg.output_dir)
