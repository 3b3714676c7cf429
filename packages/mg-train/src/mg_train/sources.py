"""Where the transformer's inputs come from: text embeddings (a text cache, or text encoders run online) and
scaled latents (a latent cache, or a frozen TAE encoding pixels), with the widths, channels and compression the
model config is derived from."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from mindspore import Tensor

from mg_data.caches import LatentStore, TextEmbeddingStore
from mg_parallel.safetensors_io import file_sha256
from mg_tae import TemporalAutoencoder
from mg_train import paths
from mg_train.config.loader import ConfigError
from mg_train.config.schema import TransformerTrainConfig
from mg_transformer.text import ENCODER_NAMES, TextEmbedder


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


def _find_tae(reference: str, base: Path | None) -> Path | None:
    for candidate in (Path(reference), *([base / reference] if base is not None else [])):
        try:
            return paths.resolve_model_dir(candidate, "tae")
        except FileNotFoundError:
            continue
    return None


class LatentSource:
    """Scaled latents of a batch: the cached posterior sample scaled with the cache's factors, or the frozen
    TAE's posterior sample of the pixels (posterior noise from the step's generator). `channels` and
    `compression` (temporal, spatial) come from the cache's meta.json or the TAE's config."""

    def __init__(self, cfg: TransformerTrainConfig):
        self.store = LatentStore(cfg.latent_cache) if cfg.latent_cache else None
        self.tae: TemporalAutoencoder | None = None
        self.tae_dir: Path | None = paths.resolve_model_dir(cfg.tae, "tae") if cfg.tae else None
        if self.store is not None:
            meta = self.store.meta
            self.channels = meta.latent_channels
            self.compression = (meta.temporal_compression, meta.spatial_compression)
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
                self.compression = (self.tae.config.temporal_compression, self.tae.config.spatial_compression)
            else:
                self._check_against_cache()

    def _check_against_cache(self) -> None:
        meta, config = self.store.meta, self.tae.config
        same = (
            config.latent_channels == meta.latent_channels
            and math.isclose(config.scaling_factor, meta.scaling_factor, rel_tol=1e-6)
            and math.isclose(config.shift_factor, meta.shift_factor, rel_tol=1e-6, abs_tol=1e-9)
            and (config.temporal_compression, config.spatial_compression) == self.compression
        )
        if same and meta.tae_sha256 is not None:
            weights = file_sha256(self.tae_dir / "model.safetensors")
            if weights != meta.tae_sha256:
                raise ConfigError(
                    f"the latent cache {self.store.root} was encoded by other TAE weights (SHA-256 "
                    f"{meta.tae_sha256[:12]}...) than {self.tae_dir / 'model.safetensors'} ({weights[:12]}...), "
                    "which this run samples with: re-encode the cache with this TAE (cache-latents into a new "
                    "folder) or set tae to the one that made it"
                )
        if not same:
            raise ConfigError(
                f"the TAE {self.tae_dir} (channels {config.latent_channels}, scaling {config.scaling_factor}, "
                f"shift {config.shift_factor}, compression {config.temporal_compression}x"
                f"{config.spatial_compression}) does not match the latent cache {self.store.root} "
                f"({meta.latent_channels}, {meta.scaling_factor}, {meta.shift_factor}, "
                f"{meta.temporal_compression}x{meta.spatial_compression})"
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
