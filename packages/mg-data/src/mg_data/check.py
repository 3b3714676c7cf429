"""Scan a manifest before training: unreadable files, durations, sizes, frame rates, buckets, drops, caches."""

from __future__ import annotations

import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mg_data.buckets import BucketConfig, assign_buckets
from mg_data.caches import NULL_KEY, LatentStore, TextEmbeddingStore, cache_key
from mg_data.manifest import Manifest, ManifestRow, load_manifest, write_manifest
from mg_data.transforms import FrameSampling
from mg_data.video_io import MediaInfo, MediaReadError, VideoFile, probe


@dataclass
class CheckReport:
    """What `check_manifest` found. `unreadable` maps 'file, line N: path' to the reason."""

    manifest: str
    rows: int
    videos: int = 0
    images: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    frames: list[int] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    resolutions: Counter = field(default_factory=Counter)
    fps: Counter = field(default_factory=Counter)
    buckets: dict[str, int] | None = None
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_examples: dict[str, list[str]] = field(default_factory=dict)
    missing_text: dict[str, int] = field(default_factory=dict)
    missing_latents: int = 0
    cache_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No unreadable file and no missing cache entry (bucket drops are not errors)."""
        return (
            not self.unreadable
            and not self.cache_problems
            and self.missing_latents == 0
            and not any(self.missing_text.values())
        )

    def to_dict(self) -> dict:
        def summary(values):
            if not values:
                return None
            return {"min": min(values), "median": statistics.median(values), "max": max(values)}

        return {
            "manifest": self.manifest,
            "rows": self.rows,
            "videos": self.videos,
            "images": self.images,
            "unreadable": self.unreadable,
            "frames": summary(self.frames),
            "duration_s": summary(self.durations),
            "resolutions": dict(self.resolutions.most_common()),
            "fps": {str(k): v for k, v in self.fps.most_common()},
            "buckets": self.buckets,
            "dropped": self.dropped,
            "missing_text": self.missing_text,
            "missing_latents": self.missing_latents,
            "cache_problems": self.cache_problems,
            "ok": self.ok,
        }

    def format(self, limit: int = 20) -> str:
        """A human-readable report (at most `limit` lines per list)."""
        lines = [
            f"manifest: {self.manifest}",
            f"rows: {self.rows} ({self.videos} videos, {self.images} images), checked in {self.seconds:.1f} s",
        ]
        lines.append(f"unreadable: {len(self.unreadable)}")
        for where, reason in list(self.unreadable.items())[:limit]:
            lines.append(f"  {where}: {reason}")
        if len(self.unreadable) > limit:
            lines.append(f"  ... and {len(self.unreadable) - limit} more")
        if self.frames:
            f, d = self.frames, self.durations
            lines.append(f"frames: min {min(f)}, median {statistics.median(f):g}, max {max(f)}")
            lines.append(
                f"duration: min {min(d):.2f} s, median {statistics.median(d):.2f} s, max {max(d):.2f} s"
            )
        if self.resolutions:
            lines.append(
                "resolutions (HxW): " + ", ".join(f"{k} x{v}" for k, v in self.resolutions.most_common(limit))
            )
        if self.fps:
            lines.append("fps: " + ", ".join(f"{k:g} x{v}" for k, v in self.fps.most_common(limit)))
        if self.buckets is not None:
            lines.append("buckets:")
            width = max(len(name) for name in self.buckets)
            for name, count in self.buckets.items():
                lines.append(f"  {name:<{width}} {count:>7}" + ("   <- empty" if count == 0 else ""))
            lines.append(f"dropped (in no bucket): {sum(self.dropped.values())}")
            for reason, count in sorted(self.dropped.items()):
                examples = ", ".join(self.dropped_examples.get(reason, [])[:3])
                lines.append(f"  {reason}: {count}" + (f" (e.g. {examples})" if examples else ""))
        for encoder, count in self.missing_text.items():
            lines.append(f"text cache {encoder}: {count} missing")
        if self.missing_latents:
            lines.append(f"latent cache: {self.missing_latents} missing")
        for problem in self.cache_problems[:limit]:
            lines.append(f"  {problem}")
        lines.append("OK" if self.ok else "PROBLEMS FOUND")
        return "\n".join(lines)


def _deep_probe(path: str) -> None:
    """Decode every frame (catches files whose tail is corrupt)."""
    with VideoFile(path) as video:
        for start in range(0, video.num_frames, 64):
            video.read(np.arange(start, min(start + 64, video.num_frames)))


def _check_row(manifest: Manifest, row: ManifestRow, deep: bool) -> MediaInfo | MediaReadError:
    path = manifest.abspath(row)
    try:
        info = probe(path)
        if not info.is_image:
            with VideoFile(path) as video:  # the last frame too: truncated files often fail only there
                video.read([video.num_frames - 1])
            if deep:
                _deep_probe(path)
        return info
    except MediaReadError as exc:
        return exc


def check_manifest(
    manifest: Manifest | str | os.PathLike,
    root: str | os.PathLike | None = None,
    buckets: BucketConfig | None = None,
    sampling: FrameSampling | None = None,
    text_cache: TextEmbeddingStore | str | os.PathLike | None = None,
    latent_cache: LatentStore | str | os.PathLike | None = None,
    deep: bool = False,
    num_workers: int = 2,
    write_to: str | os.PathLike | None = None,
    verbose: bool = False,
) -> CheckReport:
    """Open every file of a manifest (first and last frame; every frame with `deep`) and report what is there.

    With `buckets`, also the bucket histogram and what would be dropped and why (using `sampling`'s stride /
    fps / short policy). With caches, which rows lack a text embedding (per encoder) or a latent.
    `write_to` writes the readable rows with metadata columns (num_frames, height, width, fps), so later
    bucket assignment needs no probing. Raises `ManifestError` for a malformed manifest.
    """
    from concurrent.futures import ThreadPoolExecutor

    started = time.perf_counter()
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest, root)
    elif root is not None:
        manifest = Manifest(manifest.rows, Path(root), manifest.path, manifest.columns)
    sampling = sampling or FrameSampling()
    report = CheckReport(manifest=os.fspath(manifest.path or manifest.root), rows=len(manifest))
    infos: list[MediaInfo | MediaReadError] = []
    step = max(1, len(manifest) // 10)
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for index, info in enumerate(pool.map(lambda row: _check_row(manifest, row, deep), manifest.rows)):
            infos.append(info)
            if verbose and ((index + 1) % step == 0 or index + 1 == len(manifest)):
                print(
                    f"checking: {index + 1}/{len(manifest)} files ({time.perf_counter() - started:.1f} s)",
                    flush=True,
                )
    for row, info in zip(manifest.rows, infos, strict=True):
        if isinstance(info, MediaReadError):
            report.unreadable[f"{manifest.where(row)}: {row.video}"] = str(info)
            continue
        if info.is_image:
            report.images += 1
        else:
            report.videos += 1
            report.frames.append(info.num_frames)
            report.durations.append(info.duration)
            report.fps[round(info.fps, 3)] += 1
        report.resolutions[f"{info.height}x{info.width}"] += 1
        if row.info is not None and (row.num_frames, row.height, row.width) != (
            info.num_frames,
            info.height,
            info.width,
        ):
            report.cache_problems.append(
                f"{manifest.where(row)}: metadata columns say {row.num_frames} frames {row.height}x{row.width}, "
                f"the file has {info.num_frames} frames {info.height}x{info.width}"
            )
    if buckets is not None:
        assignment = assign_buckets(infos, buckets, sampling)
        report.buckets = assignment.counts()
        report.dropped = assignment.drop_reasons()
        for index, reason in assignment.reasons.items():
            report.dropped_examples.setdefault(reason.split(":")[0], []).append(manifest.rows[index].video)
    if text_cache is not None:
        store = TextEmbeddingStore(text_cache) if isinstance(text_cache, (str, os.PathLike)) else text_cache
        for encoder in store.encoders:
            missing = [
                row
                for row in manifest.rows
                if not store.path(encoder, cache_key(row.video, row.text_emb)).is_file()
            ]
            report.missing_text[encoder] = len(missing)
            report.cache_problems += [
                f"{manifest.where(row)}: no {encoder} embedding at {store.path(encoder, cache_key(row.video, row.text_emb))}"
                for row in missing[:5]
            ]
            if not store.path(encoder, NULL_KEY + ".npz").is_file():
                report.cache_problems.append(
                    f"no empty-prompt embedding {store.path(encoder, NULL_KEY + '.npz')}"
                )
    if latent_cache is not None:
        store = LatentStore(latent_cache) if isinstance(latent_cache, (str, os.PathLike)) else latent_cache
        missing = [row for row in manifest.rows if not store.exists(cache_key(row.video, row.latent))]
        report.missing_latents = len(missing)
        report.cache_problems += [
            f"{manifest.where(row)}: no latent at {store.path(cache_key(row.video, row.latent))}"
            for row in missing[:5]
        ]
    if write_to is not None:
        rows = []
        for row, info in zip(manifest.rows, infos, strict=True):
            if isinstance(info, MediaInfo):
                cells = row.to_dict()
                cells.update(
                    num_frames=info.num_frames, height=info.height, width=info.width, fps=round(info.fps, 6)
                )
                rows.append(cells)
        columns = list(dict.fromkeys([*manifest.columns, "num_frames", "height", "width", "fps"]))
        write_manifest(write_to, rows, columns)
    report.seconds = time.perf_counter() - started
    return report
