"""Embedding prompts into mg-data's text-embedding cache (docs/contracts.md section 2).

mg-data owns the format (`mg_data.TextCacheWriter`: meta.json, one atomic npz per encoder and key, the key rule);
this module only decides what to write: the real tokens of every prompt, batched by length, plus the empty
prompt, with resume (entries already present are kept), progress lines and truncation warnings. mg-data is
imported when a cache is written, so mg-transformer itself does not depend on it (`pip install
mg-transformer[cache]` adds it).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mg_transformer.text.encoders import TextTruncationWarning, truncation_message

if TYPE_CHECKING:
    from mg_transformer.text.embedder import TextEmbedder

NULL_KEY = "__null__"


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


def _cache_writer():
    try:
        from mg_data.caches import TextCacheWriter
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError(
            "writing a text-embedding cache needs mg-data, which owns the format: pip install "
            "'mg-transformer[cache]' (or mg-data)"
        ) from exc
    return TextCacheWriter


def _checked_keys(keys: Sequence[str], prompts: Sequence[str], key_rule: Callable[[str], str]) -> list[str]:
    if isinstance(keys, str) or isinstance(prompts, str):
        raise TypeError("keys and prompts must be sequences of strings, not single strings")
    normalized = [key_rule(k) for k in keys]
    if len(normalized) != len(prompts):
        raise ValueError(f"got {len(normalized)} keys but {len(prompts)} prompts")
    seen: dict[str, int] = {}
    for i, key in enumerate(normalized):
        if key in seen:
            raise ValueError(f"cache key {key!r} appears twice (items {seen[key]} and {i})")
        seen[key] = i
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {i} (key {keys[i]!r}) is {type(prompt).__name__}, expected str")
    return normalized


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
    """Embed `prompts` with every encoder of `embedder` and write them under `keys` (mg-data's `cache_key`
    rule), plus the empty prompt. See `TextEmbedder.write_cache`."""
    writer_class = _cache_writer()
    given = list(keys) if not isinstance(keys, str) else keys
    keys = _checked_keys(given, prompts, writer_class.key)
    prompts = list(prompts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype {dtype!r}: expected one of float32, float16")

    started = time.perf_counter()
    writer = writer_class(cache_dir, {name: enc.meta() for name, enc in embedder.encoders.items()}, dtype)
    report = CacheReport()
    show = _Progress(_printer(progress))
    for name, encoder in embedder.encoders.items():
        if not (skip_existing and writer.exists(name, NULL_KEY, "")):
            null = encoder.encode(embedder.prepare(name, [""]))
            writer.write(
                name, NULL_KEY, null.emb[0, : null.lengths[0]], null.tokens[0, : null.lengths[0]], caption=""
            )
        # an entry embedded from another caption (the manifest changed) is stale: embedded again
        todo = [
            i for i, key in enumerate(keys) if not (skip_existing and writer.exists(name, key, prompts[i]))
        ]
        todo.sort(key=lambda i: len(prompts[i]))  # batches of similar length compute less padding
        report.skipped[name] = len(keys) - len(todo)
        show(
            f"[text cache] {name}: {len(todo)} prompts to embed, {report.skipped[name]} already cached "
            f"-> {writer.root / name}",
            force=True,
        )
        cut: list[tuple[str, int, str]] = []
        t0, done = time.perf_counter(), 0
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            out = encoder.encode(embedder.prepare(name, [prompts[i] for i in batch]))
            for row, i in enumerate(batch):
                n = int(out.lengths[row])
                writer.write(name, keys[i], out.emb[row, :n], out.tokens[row, :n], caption=prompts[i])
                if out.dropped[row]:
                    cut.append((given[i], out.dropped[row], out.dropped_text[row]))
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
