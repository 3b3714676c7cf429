"""The text-embedding cache of docs/contracts.md section 2 (written here, read by mg-data).

```
<cache>/meta.json              {"format": "mg-text-emb", "version": 1,
                                "encoders": {"<name>": {"dim": D, "max_length": L, "model": "<id or preset>"}}}
<cache>/<encoder>/<key>.npz    text_emb (n, D) float32|float16; mask (n,) uint8 (all ones); tokens (n,) int32
<cache>/<encoder>/__null__.npz the empty prompt
```
Entries hold only the n real tokens; every file is written atomically (temporary file + rename), so an
interrupted run leaves whole entries only and `skip_existing` resumes it.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from mg_transformer.text.encoders import TextTruncationWarning, truncation_message
from mg_transformer.text.hf_io import atomic_path, write_json

if TYPE_CHECKING:
    from mg_transformer.text.embedder import TextEmbedder

CACHE_FORMAT = "mg-text-emb"
CACHE_VERSION = 1
META = "meta.json"
NULL_KEY = "__null__"
_DTYPES = {"float32": np.float32, "float16": np.float16}


def normalize_key(key: str) -> str:
    """A cache key as a relative POSIX path without the `.npz` suffix; rejects keys that could escape the cache."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"cache key {key!r}: expected a non-empty relative path")
    text = key.replace("\\", "/")
    text = text[: -len(".npz")] if text.endswith(".npz") else text
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise ValueError(
            f"cache key {key!r}: expected a relative path inside the cache (no leading '/', no '..')"
        )
    normalized = str(path)
    if normalized == NULL_KEY:
        raise ValueError(f"cache key {key!r} is reserved for the empty prompt")
    return normalized


def entry_path(cache_dir: str | os.PathLike, encoder: str, key: str) -> Path:
    """`<cache>/<encoder>/<key>.npz`."""
    return Path(cache_dir) / encoder / (key + ".npz")


def read_meta(cache_dir: str | os.PathLike) -> dict | None:
    """The cache's `meta.json`, or None when there is none yet; raises on a file of another format."""
    path = Path(cache_dir) / META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise ValueError(f"{path}: not a text-embedding cache (expected format {CACHE_FORMAT!r})")
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(
            f"{path}: cache version {meta.get('version')!r}, this writer handles {CACHE_VERSION}"
        )
    if not isinstance(meta.get("encoders"), dict):
        raise ValueError(f"{path}: expected an 'encoders' object")
    return meta


def update_meta(cache_dir: str | os.PathLike, encoders: Mapping[str, dict]) -> dict:
    """Add `encoders` ({name: {"dim", "max_length", "model"}}) to `meta.json`, refusing to mix different models."""
    meta = read_meta(cache_dir) or {"format": CACHE_FORMAT, "version": CACHE_VERSION, "encoders": {}}
    for name, entry in encoders.items():
        old = meta["encoders"].get(name)
        if old is not None and old != entry:
            raise ValueError(
                f"{Path(cache_dir) / META}: encoder {name!r} was cached with {old}, not {entry}; "
                f"use another cache folder or delete {Path(cache_dir) / name} and its meta.json entry"
            )
        meta["encoders"][name] = dict(entry)
    write_json(Path(cache_dir) / META, meta)
    return meta


def write_entry(
    path: str | os.PathLike, emb: np.ndarray, tokens: np.ndarray, dtype: type = np.float32
) -> None:
    """Write one entry of n real tokens: text_emb (n, D), mask (n,) ones, tokens (n,) int32; atomically."""
    emb = np.asarray(emb)
    if emb.ndim != 2 or len(tokens) != emb.shape[0]:
        raise ValueError(
            f"{path}: expected text_emb (n, D) and tokens (n,), got {emb.shape} and {np.shape(tokens)}"
        )
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            text_emb=emb.astype(dtype),
            mask=np.ones(emb.shape[0], dtype=np.uint8),
            tokens=np.asarray(tokens, dtype=np.int32),
        )


def read_cache_entry(
    cache_dir: str | os.PathLike, encoder: str, key: str, max_length: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(text_emb float32, mask uint8, tokens int32 or None) of one entry.

    With `max_length`, pads with zeros (mask 0) or truncates to that many tokens, as a reader does; files
    padded by the reference implementation (same keys, mask with zeros) read the same way.
    """
    path = entry_path(cache_dir, encoder, key if key == NULL_KEY else normalize_key(key))
    with np.load(path) as data:
        emb = data["text_emb"].astype(np.float32)
        mask = data["mask"].astype(np.uint8) if "mask" in data else np.ones(emb.shape[0], np.uint8)
        tokens = data["tokens"].astype(np.int32) if "tokens" in data else None
    if max_length is not None:
        n = min(emb.shape[0], max_length)
        emb = np.concatenate([emb[:n], np.zeros((max_length - n, emb.shape[1]), np.float32)])
        mask = np.concatenate([mask[:n], np.zeros(max_length - n, np.uint8)])
        if tokens is not None:
            tokens = np.concatenate([tokens[:n], np.zeros(max_length - n, np.int32)])
    return emb, mask, tokens


@dataclass
class CacheReport:
    """What `write_text_cache` did, per encoder: entries written, entries already present, truncated keys."""

    written: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    truncated: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    seconds: float = 0.0


class _Progress:
    """Throttled progress lines: the first and last batch, and at most one line every `every` seconds between."""

    def __init__(self, out: Callable[[str], None] | None, every: float = 2.0) -> None:
        self.out, self.every, self.last = out, every, 0.0

    def __call__(self, line: str, force: bool = False) -> None:
        now = time.perf_counter()
        if self.out is not None and (force or now - self.last >= self.every):
            self.out(line)
            self.last = now


def _printer(progress: bool | Callable[[str], None]) -> Callable[[str], None] | None:
    if callable(progress):
        return progress
    return (lambda line: print(line, flush=True)) if progress else None


def write_text_cache(
    embedder: TextEmbedder,
    cache_dir: str | os.PathLike,
    keys: Sequence[str],
    prompts: Sequence[str],
    *,
    batch_size: int = 16,
    dtype: str = "float32",
    skip_existing: bool = True,
    progress: bool | Callable[[str], None] = True,
) -> CacheReport:
    """Embed `prompts` with every encoder of `embedder` and write `<cache>/<encoder>/<key>.npz`, plus meta.json
    and the `__null__` entry. See `TextEmbedder.write_cache`."""
    if isinstance(keys, str) or isinstance(prompts, str):
        raise TypeError("keys and prompts must be sequences of strings, not single strings")
    keys, prompts = [normalize_key(k) for k in keys], list(prompts)
    if len(keys) != len(prompts):
        raise ValueError(f"got {len(keys)} keys but {len(prompts)} prompts")
    seen: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in seen:
            raise ValueError(f"cache key {key!r} appears twice (items {seen[key]} and {i})")
        seen[key] = i
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {i} (key {keys[i]!r}) is {type(prompt).__name__}, expected str")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(_DTYPES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")

    started = time.perf_counter()
    cache_dir = Path(cache_dir)
    update_meta(cache_dir, {name: enc.meta() for name, enc in embedder.encoders.items()})
    report = CacheReport()
    show = _Progress(_printer(progress))
    for name, encoder in embedder.encoders.items():
        null_path = entry_path(cache_dir, name, NULL_KEY)
        if not (skip_existing and null_path.is_file()):
            null = encoder.encode(embedder.prepare(name, [""]))
            write_entry(
                null_path, null.emb[0, : null.lengths[0]], null.tokens[0, : null.lengths[0]], _DTYPES[dtype]
            )
        todo = [
            i
            for i, key in enumerate(keys)
            if not (skip_existing and entry_path(cache_dir, name, key).is_file())
        ]
        todo.sort(key=lambda i: len(prompts[i]))  # batches of similar length compute less padding
        report.skipped[name] = len(keys) - len(todo)
        show(
            f"[text cache] {name}: {len(todo)} prompts to embed, {report.skipped[name]} already cached "
            f"-> {cache_dir / name}",
            force=True,
        )
        cut: list[tuple[str, int, str]] = []
        t0, done = time.perf_counter(), 0
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            out = encoder.encode(embedder.prepare(name, [prompts[i] for i in batch]))
            for row, i in enumerate(batch):
                n = int(out.lengths[row])
                write_entry(
                    entry_path(cache_dir, name, keys[i]),
                    out.emb[row, :n],
                    out.tokens[row, :n],
                    _DTYPES[dtype],
                )
                if out.dropped[row]:
                    cut.append((keys[i], out.dropped[row], out.dropped_text[row]))
            done += len(batch)
            rate = done / max(time.perf_counter() - t0, 1e-9)
            show(
                f"[text cache] {name}: {done}/{len(todo)} prompts ({100 * done / len(todo):.0f}%), "
                f"{rate:.1f} prompts/s, ~{(len(todo) - done) / rate:.0f} s left",
                force=done in (len(batch), len(todo)),
            )
        report.written[name] = len(todo)
        report.truncated[name] = [(key, n) for key, n, _ in cut]
        if cut:
            labelled = [(f"key {key!r}", n, text) for key, n, text in cut]
            message = truncation_message(name, encoder.max_length, len(todo), labelled)
            warnings.warn(message, TextTruncationWarning, stacklevel=3)
    report.seconds = time.perf_counter() - started
    return report
