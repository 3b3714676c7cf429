"""The text-embedding cache and the TAE latent cache (docs/contracts.md 2-3): the one reader and writer of both.

Text cache (written by `TextCacheWriter`, e.g. through mg-transformer's `TextEmbedder.write_cache`)::

    <cache>/meta.json              {"format": "mg-text-emb", "version": 1, "encoders": {name: {"dim", "max_length", "model"}}}
    <cache>/<encoder>/<key>        text_emb (n, D) float32|float16; mask (n,) uint8 (all ones); tokens (n,) int32
    <cache>/<encoder>/__null__.npz the empty prompt

Latent cache (written by `LatentCacheWriter`, used by mg-train's `cache-latents`)::

    <cache>/meta.json    {"format": "mg-latents", "version": 1, "scaling_factor", "shift_factor",
                          "latent_channels", "frames", "size": [H, W], "tae"}
    <cache>/<key>        latent_mean (C, T', h, w) float32; latent_std (C, T', h, w) float32

`<key>` follows one rule for both caches and every writer and reader (`cache_key`): the manifest's `video` path
with `.npz` as extension, unless the row names one (`text_emb`, `latent`); a key given without `.npz` gets it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from mg_data.atomic import atomic_file, write_text

TEXT_FORMAT = "mg-text-emb"
LATENT_FORMAT = "mg-latents"
NULL_KEY = "__null__"


class CacheError(RuntimeError):
    """A cache file or its meta.json is missing or malformed; the message names the file and the field."""


class CacheKeyError(CacheError, ValueError):
    """A cache key that is empty, leaves the cache folder, or names the empty prompt's reserved entry."""


def cache_key(video: str, override: str | None = None) -> str:
    """The cache file name of a sample: `override` (a manifest column) or `video` with its extension replaced by
    `.npz` (`clips/a.mp4` and `clips/a` -> `clips/a.npz`); a relative POSIX path that stays inside the cache."""
    if not isinstance(video, str) or not (override or video).strip():
        raise CacheKeyError(f"cache key {video!r}: expected a non-empty relative path")
    text = (override or video).replace("\\", "/")
    key = text if override else str(PurePosixPath(text).with_suffix(".npz"))
    if not key.endswith(".npz"):
        key += ".npz"
    parts = PurePosixPath(key).parts
    if key.startswith("/") or ".." in parts:
        raise CacheKeyError(f"cache key {key!r} must be a relative path inside the cache")
    return key


def _load_npz(path: Path, required: Sequence[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise CacheError(f"{path}: cache file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in required if name not in data.files]
            if missing:
                raise CacheError(f"{path}: missing arrays {missing} (has {sorted(data.files)})")
            return {name: data[name] for name in data.files}
    except CacheError:
        raise
    except Exception as exc:
        raise CacheError(f"{path}: unreadable npz ({type(exc).__name__}: {exc})") from exc


class LoadedEntries:
    """Cache entries already read, kept in memory up to `limit_mb` (least recently used dropped first).

    Reading and unpacking an npz costs ~1 ms per entry: for small latents that is as much as a training step of a
    tiny model spends on its batch. Arrays kept here are made read-only, so a caller that modifies one fails
    loudly instead of changing what later reads return. `limit_mb=0` keeps nothing.
    """

    def __init__(self, limit_mb: float = 0.0):
        if not limit_mb >= 0:
            raise ValueError(f"memory_mb must be >= 0, got {limit_mb}")
        self.limit_bytes = int(limit_mb * 2**20)
        self.bytes = 0
        self._entries: OrderedDict[Hashable, tuple[np.ndarray, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> tuple[np.ndarray, ...] | None:
        arrays = self._entries.get(key)
        if arrays is not None:
            self._entries.move_to_end(key)
        return arrays

    def put(self, key: Hashable, arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        size = sum(a.nbytes for a in arrays)
        if size > self.limit_bytes or key in self._entries:
            return arrays
        for array in arrays:
            array.flags.writeable = False
        self._entries[key] = arrays
        self.bytes += size
        while self.bytes > self.limit_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in dropped)
        return arrays


def _read_meta(root: Path, expected_format: str) -> dict | None:
    path = root / "meta.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable meta.json ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != expected_format:
        raise CacheError(
            f"{path}: field 'format' is {meta.get('format') if isinstance(meta, dict) else meta!r}, expected {expected_format!r}"
        )
    if meta.get("version") != 1:
        raise CacheError(f"{path}: field 'version' is {meta.get('version')!r}, this reader knows version 1")
    return meta


@dataclass(frozen=True)
class EncoderSpec:
    """One text encoder's entry in the cache: embedding width and the length readers pad or truncate to."""

    name: str
    dim: int | None
    max_length: int | None
    model: str | None = None


class TextEmbeddingStore:
    """Reads cached text embeddings for one or more encoders and returns them padded to each encoder's max_length.

    Open a cache written by mg_transformer.text with `TextEmbeddingStore(root)` (meta.json gives the encoders),
    or the reference implementation's folders (files already padded to L, no meta.json) with
    `TextEmbeddingStore.from_folders({"ul2": dir1, "byt5": dir2})`. `encoders` selects a subset;
    `max_lengths` overrides meta's lengths (e.g. a smaller model). `memory_mb` keeps up to that many MB of
    loaded entries in memory (`LoadedEntries`: read-only arrays, least recently used dropped first).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        encoders: Sequence[str] | None = None,
        max_lengths: Mapping[str, int] | None = None,
        memory_mb: float = 0.0,
    ):
        self.root = Path(root)
        self.memory = LoadedEntries(memory_mb)
        meta = _read_meta(self.root, TEXT_FORMAT)
        if meta is None:
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
            raise CacheError(
                f"{self.root / 'meta.json'}: not found; a text cache needs meta.json "
                f"(for reference-style folders {found} use TextEmbeddingStore.from_folders)"
            )
        entries = meta.get("encoders")
        if not isinstance(entries, dict) or not entries:
            raise CacheError(f"{self.root / 'meta.json'}: field 'encoders' must be a non-empty object")
        specs = {}
        for name, entry in entries.items():
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("max_length"), int)
                or not isinstance(entry.get("dim"), int)
            ):
                raise CacheError(
                    f"{self.root / 'meta.json'}: encoders.{name} needs integer 'dim' and 'max_length', got {entry!r}"
                )
            specs[name] = EncoderSpec(name, entry["dim"], entry["max_length"], entry.get("model"))
        self._init(specs, {name: self.root / name for name in specs}, encoders, max_lengths)

    @classmethod
    def from_folders(
        cls,
        folders: Mapping[str, str | os.PathLike],
        max_lengths: Mapping[str, int] | None = None,
        memory_mb: float = 0.0,
    ) -> TextEmbeddingStore:
        """A store over one folder per encoder (reference layout: `<folder>/<key>.npz`, padded `text_emb`/`mask`)."""
        store = cls.__new__(cls)
        store.root = None
        store.memory = LoadedEntries(memory_mb)
        specs = {name: EncoderSpec(name, None, None) for name in folders}
        store._init(specs, {name: Path(folder) for name, folder in folders.items()}, None, max_lengths)
        return store

    def _init(self, specs, folders, encoders, max_lengths) -> None:
        if encoders is not None:
            unknown = [name for name in encoders if name not in specs]
            if unknown:
                raise CacheError(f"{self.root}: encoders {unknown} not in the cache (has {sorted(specs)})")
            specs = {name: specs[name] for name in encoders}
        for name, length in (max_lengths or {}).items():
            if name in specs:
                specs[name] = EncoderSpec(name, specs[name].dim, int(length), specs[name].model)
        self.specs: dict[str, EncoderSpec] = specs
        self.folders: dict[str, Path] = {name: folders[name] for name in specs}

    @property
    def encoders(self) -> list[str]:
        """Names of the encoders this store serves."""
        return list(self.specs)

    def path(self, encoder: str, key: str) -> Path:
        """File of one sample for one encoder."""
        return self.folders[encoder] / key

    def exists(self, key: str) -> bool:
        """True when every encoder has a file for `key`."""
        return all(self.path(name, key).is_file() for name in self.specs)

    def load(self, encoder: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(embedding (L, D) float32, mask (L,) uint8) of one encoder, padded with zeros / truncated to max_length."""
        kept = self.memory.get((encoder, key))
        if kept is not None:
            return kept
        return self.memory.put((encoder, key), self._read(encoder, key))

    def _read(self, encoder: str, key: str) -> tuple[np.ndarray, np.ndarray]:
        spec = self.specs[encoder]
        path = self.path(encoder, key)
        data = _load_npz(path, ("text_emb",))
        emb = np.asarray(data["text_emb"])
        if emb.ndim == 3 and emb.shape[0] == 1:  # some writers keep a batch axis of one
            emb = emb[0]
        if emb.ndim != 2:
            raise CacheError(f"{path}: text_emb has shape {emb.shape}, expected (n, D)")
        if spec.dim is not None and emb.shape[1] != spec.dim:
            raise CacheError(
                f"{path}: text_emb width {emb.shape[1]} != {encoder} dim {spec.dim} in meta.json"
            )
        if "mask" in data:
            mask = np.asarray(data["mask"]).reshape(-1)
            if mask.shape[0] != emb.shape[0]:
                raise CacheError(f"{path}: mask has {mask.shape[0]} entries for {emb.shape[0]} tokens")
            mask = (mask != 0).astype(np.uint8)
        else:
            mask = np.ones(emb.shape[0], np.uint8)
        length = spec.max_length if spec.max_length is not None else emb.shape[0]
        out_emb = np.zeros((length, emb.shape[1]), np.float32)
        out_mask = np.zeros(length, np.uint8)
        n = min(length, emb.shape[0])
        out_emb[:n] = emb[:n]
        out_mask[:n] = mask[:n]
        out_emb[out_mask == 0] = (
            0.0  # padded rows of reference files hold encoder outputs; zero them like ours
        )
        return out_emb, out_mask

    def get(self, key: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """{encoder: (embedding (L, D) float32, mask (L,) uint8)} for one sample."""
        return {name: self.load(name, key) for name in self.specs}

    def null(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Embeddings of the empty prompt (`__null__.npz`), for classifier-free-guidance dropout."""
        return self.get(NULL_KEY + ".npz")


TEXT_DTYPES = {"float32": np.float32, "float16": np.float16}


def caption_sha256(caption: str) -> str:
    """The hash a text-cache entry records of the caption it was embedded from."""
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


class TextCacheWriter:
    """Writes a text-embedding cache in the contract's format: meta.json, then one npz per (encoder, key), each
    atomically, so an interrupted job leaves whole entries only and resumes by skipping what `exists()` reports.

    `encoders` maps encoder name -> {"dim", "max_length", "model"}; reopening a cache that recorded an encoder
    with other values raises (one cache never mixes two models). Keys follow `cache_key`.
    """

    def __init__(self, root: str | os.PathLike, encoders: Mapping[str, Mapping], dtype: str = "float32"):
        if dtype not in TEXT_DTYPES:
            raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(TEXT_DTYPES)}")
        self.root, self.dtype = Path(root), TEXT_DTYPES[dtype]
        meta_path = self.root / "meta.json"
        meta = _read_meta(self.root, TEXT_FORMAT) or {"format": TEXT_FORMAT, "version": 1, "encoders": {}}
        recorded = meta.get("encoders")
        if not isinstance(recorded, dict):
            raise CacheError(f"{meta_path}: field 'encoders' must be an object")
        for name, entry in encoders.items():
            entry = {
                "dim": int(entry["dim"]),
                "max_length": int(entry["max_length"]),
                "model": entry.get("model"),
            }
            old = recorded.get(name)
            if old is not None and old != entry:
                raise CacheError(
                    f"{meta_path}: encoder {name!r} was cached with {old}, not {entry}; use another cache "
                    f"folder or delete {self.root / name} and its meta.json entry"
                )
            recorded[name] = entry
        self.encoders = dict(recorded)
        self.root.mkdir(parents=True, exist_ok=True)
        write_text(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def path(self, encoder: str, key: str) -> Path:
        """File of one entry; `key` as for `cache_key` (a cache key or a manifest `video` path)."""
        return self.root / encoder / (NULL_KEY + ".npz" if key == NULL_KEY else self.key(key))

    @staticmethod
    def key(key: str) -> str:
        """`cache_key(key)`, refusing the empty prompt's reserved name."""
        normalized = cache_key(key)
        if normalized == NULL_KEY + ".npz":
            raise CacheKeyError(f"cache key {key!r} is reserved for the empty prompt")
        return normalized

    def exists(self, encoder: str, key: str, caption: str | None = None) -> bool:
        """True when the entry is written and, given its `caption`, was embedded from that caption (an entry
        without a recorded caption hash, or with another one, is stale)."""
        path = self.path(encoder, key)
        if not path.is_file():
            return False
        if caption is None:
            return True
        try:
            with np.load(path, allow_pickle=False) as data:
                recorded = str(data["caption_sha256"]) if "caption_sha256" in data.files else None
        except (OSError, ValueError, zipfile.BadZipFile):
            return False
        return recorded == caption_sha256(caption)

    def write(
        self, encoder: str, key: str, emb: np.ndarray, tokens: np.ndarray, caption: str | None = None
    ) -> Path:
        """Store the n real tokens of one prompt: text_emb (n, D), mask (n,) ones, tokens (n,) int32, and the
        SHA-256 of its caption when given (`exists` compares it). `key` = NULL_KEY writes the empty prompt."""
        if encoder not in self.encoders:
            raise CacheError(
                f"{self.root}: encoder {encoder!r} is not in meta.json (has {sorted(self.encoders)})"
            )
        path = self.path(encoder, key)
        emb = np.asarray(emb)
        dim = self.encoders[encoder]["dim"]
        if emb.ndim != 2 or emb.shape[1] != dim or len(tokens) != emb.shape[0]:
            raise CacheError(
                f"{path}: expected text_emb (n, {dim}) and tokens (n,), got {emb.shape} and {np.shape(tokens)}"
            )
        with atomic_file(path) as tmp, open(tmp, "wb") as handle:
            extra = {} if caption is None else {"caption_sha256": np.array(caption_sha256(caption))}
            np.savez(
                handle,
                text_emb=emb.astype(self.dtype),
                mask=np.ones(emb.shape[0], dtype=np.uint8),
                tokens=np.asarray(tokens, dtype=np.int32),
                **extra,
            )
        return path


@dataclass(frozen=True)
class LatentMeta:
    """The latent cache's meta.json: factors to scale latents (z - shift) * scale, and how they were made."""

    scaling_factor: float
    shift_factor: float
    latent_channels: int = 16
    frames: int | None = None
    size: tuple[int, int] | None = None
    tae: str = ""
    temporal_compression: int = 8  # the contract's 8x (docs/contracts.md 1) where a cache does not say
    spatial_compression: int = 8
    tae_sha256: str | None = None  # of the TAE's weights file: the same folder may hold retrained weights

    def differences(self, other: LatentMeta) -> list[str]:
        """`field: mine vs other's` for every field that differs (an unrecorded weights hash matches any)."""
        out = []
        for name in self.__dataclass_fields__:
            a, b = getattr(self, name), getattr(other, name)
            if name == "tae_sha256" and (a is None or b is None):
                continue
            if a != b:
                out.append(f"{name}: {a} vs {b}")
        return out

    def to_json(self) -> dict:
        return {
            "format": LATENT_FORMAT,
            "version": 1,
            "scaling_factor": self.scaling_factor,
            "shift_factor": self.shift_factor,
            "latent_channels": self.latent_channels,
            "frames": self.frames,
            "size": list(self.size) if self.size is not None else None,
            "tae": self.tae,
            "temporal_compression": self.temporal_compression,
            "spatial_compression": self.spatial_compression,
            **({"tae_sha256": self.tae_sha256} if self.tae_sha256 is not None else {}),
        }

    @classmethod
    def from_json(cls, meta: dict, where: str) -> LatentMeta:
        try:
            size = meta.get("size")
            return cls(
                scaling_factor=float(meta["scaling_factor"]),
                shift_factor=float(meta["shift_factor"]),
                latent_channels=int(meta.get("latent_channels", 16)),
                frames=int(meta["frames"]) if meta.get("frames") is not None else None,
                size=(int(size[0]), int(size[1])) if size is not None else None,
                tae=str(meta.get("tae", "")),
                temporal_compression=int(meta.get("temporal_compression", 8)),
                spatial_compression=int(meta.get("spatial_compression", 8)),
                tae_sha256=str(meta["tae_sha256"]) if meta.get("tae_sha256") else None,
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CacheError(f"{where}: bad or missing field ({type(exc).__name__}: {exc})") from None


class LatentStore:
    """Reads cached TAE posteriors (mean, std) and draws latents `z = mean + std * eps` (unscaled, contracts 3).

    `memory_mb` keeps up to that many MB of loaded posteriors in memory (`LoadedEntries`: read-only arrays).
    """

    def __init__(self, root: str | os.PathLike, memory_mb: float = 0.0):
        self.root = Path(root)
        self.memory = LoadedEntries(memory_mb)
        meta = _read_meta(self.root, LATENT_FORMAT)
        if meta is None:
            raise CacheError(f"{self.root / 'meta.json'}: not found (a latent cache needs meta.json)")
        self.meta = LatentMeta.from_json(meta, os.fspath(self.root / "meta.json"))

    def path(self, key: str) -> Path:
        return self.root / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def load(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std), each (C, T', h, w) float32."""
        kept = self.memory.get(key)
        if kept is not None:
            return kept
        path = self.path(key)
        data = _load_npz(path, ("latent_mean", "latent_std"))
        mean, std = (
            data["latent_mean"].astype(np.float32, copy=False),
            data["latent_std"].astype(np.float32, copy=False),
        )
        _check_latent_pair(mean, std, self.meta.latent_channels, os.fspath(path))
        return self.memory.put(key, (mean, std))

    def shape(self, key: str) -> tuple[int, ...]:
        """(C, T', h, w) of a cached latent, read from the npz header without loading the arrays."""
        path = self.path(key)
        if not path.is_file():
            raise CacheError(f"{path}: cache file not found")
        try:
            with zipfile.ZipFile(path) as archive, archive.open("latent_mean.npy") as handle:
                version = np.lib.format.read_magic(handle)
                if version == (1, 0):
                    shape = np.lib.format.read_array_header_1_0(handle)[0]
                else:
                    shape = np.lib.format.read_array_header_2_0(handle)[0]
        except Exception as exc:
            raise CacheError(f"{path}: unreadable latent_mean header ({type(exc).__name__}: {exc})") from exc
        if len(shape) != 4:
            raise CacheError(f"{path}: latent_mean has shape {shape}, expected (C, T', h, w)")
        return tuple(int(v) for v in shape)

    def sample(self, key: str, rng: np.random.Generator) -> np.ndarray:
        """A latent drawn from the cached posterior: mean + std * N(0, 1), float32 (C, T', h, w), unscaled."""
        mean, std = self.load(key)
        eps = rng.standard_normal(mean.shape, dtype=np.float32)
        return mean + std * eps

    def scale(self, z: np.ndarray) -> np.ndarray:
        """(z - shift_factor) * scaling_factor: what the diffusion model sees."""
        return (z - np.float32(self.meta.shift_factor)) * np.float32(self.meta.scaling_factor)


def _check_latent_pair(mean: np.ndarray, std: np.ndarray, channels: int | None, where: str) -> None:
    if mean.ndim != 4:
        raise CacheError(f"{where}: latent_mean has shape {mean.shape}, expected (C, T', h, w)")
    if std.shape != mean.shape:
        raise CacheError(f"{where}: latent_std shape {std.shape} differs from latent_mean {mean.shape}")
    if channels is not None and mean.shape[0] != channels:
        raise CacheError(
            f"{where}: {mean.shape[0]} latent channels, meta.json says latent_channels={channels}"
        )


class LatentCacheWriter:
    """Writes a latent cache in the contract's format: meta.json once, then one npz per sample, each atomically.

    Reopening an existing cache checks that its meta.json agrees (so an interrupted `cache-latents` job can
    resume and skip what `exists()` reports). Safe to use from several processes on disjoint keys.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        scaling_factor: float,
        shift_factor: float,
        latent_channels: int = 16,
        frames: int | None = None,
        size: Sequence[int] | None = None,
        tae: str = "",
        temporal_compression: int = 8,
        spatial_compression: int = 8,
        tae_sha256: str | None = None,
    ):
        self.root = Path(root)
        self.meta = LatentMeta(
            scaling_factor=float(scaling_factor),
            shift_factor=float(shift_factor),
            latent_channels=int(latent_channels),
            frames=int(frames) if frames is not None else None,
            size=(int(size[0]), int(size[1])) if size is not None else None,
            tae=str(tae),
            temporal_compression=int(temporal_compression),
            spatial_compression=int(spatial_compression),
            tae_sha256=tae_sha256,
        )
        existing = _read_meta(self.root, LATENT_FORMAT)
        if existing is not None:
            old = LatentMeta.from_json(existing, os.fspath(self.root / "meta.json"))
            differ = old.differences(self.meta)
            if differ:
                raise CacheError(
                    f"{self.root / 'meta.json'}: existing cache was written with other settings ("
                    + "; ".join(f"{d} (cached vs now)" for d in differ)
                    + "); write to another folder, or delete this one to re-encode"
                )
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            write_text(self.root / "meta.json", json.dumps(self.meta.to_json(), indent=2) + "\n")

    def path(self, key: str) -> Path:
        """File of a sample; `key` is a cache key (`*.npz`) or a manifest `video` path."""
        return self.root / cache_key(key)

    def exists(self, key: str) -> bool:
        """True when the sample's file is already written (keys as for `write`)."""
        return self.path(key).is_file()

    def write(self, key: str, mean: np.ndarray, std: np.ndarray) -> Path:
        """Store one sample's posterior. `key` is a cache key (`*.npz`) or a manifest `video` path."""
        mean = np.asarray(mean, dtype=np.float32)
        std = np.asarray(std, dtype=np.float32)
        path = self.path(key)
        _check_latent_pair(mean, std, self.meta.latent_channels, os.fspath(path))
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise CacheError(f"{path}: refusing to write non-finite latents")
        if (std < 0).any():
            raise CacheError(f"{path}: latent_std has negative entries")
        with atomic_file(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, latent_mean=mean, latent_std=std)
        return path


def write_latent(root: str | os.PathLike, key: str, mean: np.ndarray, std: np.ndarray, **meta) -> Path:
    """One-shot `LatentCacheWriter(root, **meta).write(key, mean, std)` (meta: scaling_factor, shift_factor, ...)."""
    return LatentCacheWriter(root, **meta).write(key, mean, std)
