"""A map-style dataset of videos and images (or their cached latents) returning dicts of numpy arrays.

One sample (docs/contracts.md 1):
- `video`: (3, T, H, W) float32 in [-1, 1] (images: T = 1), or `latent`: (C, T', h, w) float32 unscaled
  `mean + std * eps` when a latent cache is given;
- `caption`: str ("" when text is dropped or the manifest has none);
- `<encoder>_emb` (L, D) float32 and `<encoder>_mask` (L,) uint8 per cached text encoder;
- `fps`: float32 frame rate of the returned clip; `index`: int64 index of the sample actually served;
- `reference`: (S, S, 3) uint8 RGB reference image (personalisation, PT2V) when `reference_columns` is given:
  the image named in one of those manifest columns (chosen per sample), centre-cropped and resized to S.

Randomness (clip start, crop, flip, latent noise, text dropout) comes from a generator seeded by
(seed, epoch, index), so a sample is the same whichever worker loads it and after a resume.
A file that fails to load is replaced by the next good sample of the same bucket, counted and remembered.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mg_data.buckets import Bucket, BucketAssignment, BucketConfig, assign_buckets
from mg_data.caches import NULL_KEY, CacheError, LatentStore, TextEmbeddingStore, cache_key
from mg_data.manifest import Manifest, ManifestRow, load_manifest, probe_manifest
from mg_data.transforms import (
    ClipTooShort,
    FrameSampling,
    hflip,
    latent_frames,
    resize_crop,
    sample_frame_indices,
    to_model_layout,
)
from mg_data.video_io import IMAGE_FPS, MediaReadError, VideoFile, is_image_path, read_image

LOAD_ERRORS = (MediaReadError, ClipTooShort, CacheError, OSError)


def _as_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


class VideoDataset:
    """Videos and images of a manifest, decoded (decord / Pillow) and transformed, or their cached latents.

    Without buckets every sample has `num_frames` frames (images 1) resized and cropped to `size`
    (int: square; (H, W); None: native). With `buckets`, each sample gets its bucket's frame count and size
    (`bucket_ids` / `assignment` feed `BucketBatchSampler`); samples that fit no bucket are listed in
    `assignment.reasons`. Without metadata columns in the manifest, building buckets opens every file once.

    Frame sampling: `stride` between frames or a target `fps`; `start` 'random' or 'center'; short videos by
    `short_policy` 'skip' (replaced like a bad file / dropped from buckets), 'loop' or 'pad'.
    Augmentation: `random_crop` (else centre) and `hflip` (probability 0.5). With `text_cache`, each sample
    carries its embeddings; `text_drop_prob` replaces them by the empty prompt's (classifier-free guidance).
    With `latent_cache`, samples serve latents instead of pixels: `num_latent_frames` (or the bucket's
    ceil(T / 8)) consecutive latent frames from a start chosen like a clip's; flips and crops do not apply.
    With `reference_columns` (e.g. ("reference",), or ("reference", "cross_reference") for PT2V's stage 3, one
    picked uniformly per sample) each sample carries its reference image, `reference_size` pixels square.
    With `condition_column` (e.g. "source" for Movie Gen Edit) each sample also carries `condition`: that
    column's video (latents from the cache, or pixels) loaded with the same random choices as the sample's own
    (start frame, crop, flip), so source and target stay aligned.
    """

    def __init__(
        self,
        manifest: Manifest | str | os.PathLike,
        root: str | os.PathLike | None = None,
        *,
        num_frames: int = 16,
        stride: int = 1,
        fps: float | None = None,
        size: int | Sequence[int] | None = None,
        start: str = "random",
        short_policy: str = "skip",
        random_crop: bool = False,
        hflip: bool = False,
        interpolation: str = "bicubic",
        buckets: BucketConfig | None = None,
        text_cache: TextEmbeddingStore | str | os.PathLike | None = None,
        text_drop_prob: float = 0.0,
        latent_cache: LatentStore | str | os.PathLike | None = None,
        num_latent_frames: int | None = None,
        spatial_compression: int = 8,
        temporal_compression: int = 8,
        seed: int = 0,
        max_retries: int = 20,
        reference_columns: Sequence[str] = (),
        reference_size: int = 224,
        condition_column: str | None = None,
        decode_threads: int = 1,
        probe_workers: int = 2,
        verbose: bool = False,
    ):
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest, root)
        if root is not None and isinstance(manifest, Manifest):
            self.manifest = Manifest(manifest.rows, Path(root), manifest.path, manifest.columns)
        self.sampling = FrameSampling(
            num_frames=num_frames, stride=stride, fps=fps, start=start, short_policy=short_policy
        )
        self.size = _as_size(size)
        self.random_crop, self.hflip, self.interpolation = random_crop, hflip, interpolation
        if not 0 <= text_drop_prob <= 1:
            raise ValueError(f"text_drop_prob must be in [0, 1], got {text_drop_prob}")
        self.text_cache = (
            TextEmbeddingStore(text_cache) if isinstance(text_cache, (str, os.PathLike)) else text_cache
        )
        self.text_drop_prob = text_drop_prob
        self.latent_cache = (
            LatentStore(latent_cache) if isinstance(latent_cache, (str, os.PathLike)) else latent_cache
        )
        self.num_latent_frames = num_latent_frames
        self.spatial_compression, self.temporal_compression = spatial_compression, temporal_compression
        self.seed, self.max_retries, self.decode_threads = int(seed), int(max_retries), int(decode_threads)
        self.verbose = verbose
        self.reference_columns, self.reference_size = tuple(reference_columns), int(reference_size)
        missing = [c for c in self.reference_columns if c not in self.manifest.columns]
        if missing:
            raise ValueError(
                f"{self.manifest.path or 'manifest'}: reference_columns {missing} are not among its columns "
                f"{list(self.manifest.columns)}"
            )
        self.condition_column = condition_column
        if condition_column is not None and condition_column not in self.manifest.columns:
            raise ValueError(
                f"{self.manifest.path or 'manifest'}: condition_column {condition_column!r} is not among its "
                f"columns {list(self.manifest.columns)}"
            )
        self.epoch = 0
        self.errors: dict[int, str] = {}  # index -> why it failed; never retried
        self.num_substituted = 0
        self._null_text: dict | None = None
        self.buckets = buckets
        self.assignment: BucketAssignment | None = None
        if buckets is not None:
            self.assignment = self._assign(buckets, probe_workers)

    # -- buckets -----------------------------------------------------------------------------------------------

    def _assign(self, config: BucketConfig, probe_workers: int) -> BucketAssignment:
        if self.latent_cache is None:
            infos = probe_manifest(self.manifest, num_workers=probe_workers, verbose=self.verbose)
            return assign_buckets(infos, config, self.sampling)
        ids = np.full(len(self.manifest), -1, dtype=np.int64)
        reasons: dict[int, str] = {}
        for index, row in enumerate(self.manifest.rows):
            try:
                shape = self.latent_cache.shape(cache_key(row.video, row.latent))
            except CacheError as exc:
                reasons[index] = f"unreadable: {exc}"
                continue
            bucket, reason = config.assign_latent(
                shape,
                self.sampling.short_policy,
                self.spatial_compression,
                self.temporal_compression,
                is_image=row.is_image,
            )
            if bucket is None:
                reasons[index] = reason
            else:
                ids[index] = bucket
        return BucketAssignment(ids, config, reasons)

    @property
    def bucket_ids(self) -> np.ndarray:
        """Bucket of every sample (-1 = none); requires `buckets`."""
        if self.assignment is None:
            raise ValueError("this dataset was built without buckets")
        return self.assignment.bucket_ids

    # -- access ------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.manifest)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds augmentation (call it with the sampler's epoch)."""
        self.epoch = int(epoch)

    def row(self, index: int) -> ManifestRow:
        """The manifest row of a sample (captions, ground-truth columns, ...)."""
        return self.manifest[index]

    def __getitem__(self, index: int) -> dict:
        return self.get(int(index))

    def get(self, index: int, epoch: int | None = None, bucket: int | Bucket | None = None) -> dict:
        """Sample `index` at `epoch` (default: `set_epoch`'s), shaped for `bucket` (default: its own).

        A sample that fails to load (missing or corrupt file, too short, missing cache entry) is recorded in
        `errors` and replaced by the next loadable sample of the same bucket (or of the dataset without buckets).
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        index %= len(self)
        epoch = self.epoch if epoch is None else int(epoch)
        target = self._bucket_of(index, bucket)
        candidates = self._candidates(index, target)
        last_error = None
        for attempt, candidate in enumerate(candidates):
            if attempt > self.max_retries:
                break
            if candidate in self.errors:
                last_error = self.errors[candidate]
                continue
            try:  # a fresh stream per attempt: the result does not depend on which failures came first
                sample = self._load(candidate, target, np.random.default_rng([self.seed, epoch, index]))
            except LOAD_ERRORS as exc:
                self._record(candidate, exc)
                last_error = self.errors[candidate]
                continue
            if candidate != index:
                self.num_substituted += 1
            sample["substituted"] = np.int32(candidate != index)  # counted by the consumer (loader workers)
            return sample
        raise RuntimeError(
            f"sample {index} ({self.manifest.abspath(index)}) and its {self.max_retries} substitutes failed to load; "
            f"last error: {last_error}"
        )

    def _bucket_of(self, index: int, bucket: int | Bucket | None) -> Bucket | None:
        if isinstance(bucket, Bucket):
            return bucket
        if bucket is not None:
            if self.buckets is None:
                raise ValueError("a bucket index needs a dataset built with buckets")
            return self.buckets[int(bucket)]
        if self.assignment is None:
            return None
        own = int(self.assignment.bucket_ids[index])
        if own < 0:
            raise ValueError(
                f"sample {index} ({self.manifest.where(index)}) is in no bucket ({self.assignment.reasons.get(index)}); "
                "the bucket sampler never yields it"
            )
        return self.buckets[own]

    def _candidates(self, index: int, target: Bucket | None):
        """`index`, then the following samples (cyclically) that can stand in for it."""
        if self.assignment is not None and target is not None and target in self.buckets.buckets:
            members = self.assignment.members(self.buckets.buckets.index(target))
            if index not in members:
                members = np.concatenate([[index], members])
            start = int(np.flatnonzero(members == index)[0])
            order = np.roll(members, -start)
        else:
            order = (index + np.arange(len(self))) % len(self)
        return (int(i) for i in order)

    def _record(self, index: int, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        self.errors[index] = reason
        warnings.warn(f"skipping sample {index} ({self.manifest.where(index)}): {reason}", stacklevel=3)

    # -- loading -----------------------------------------------------------------------------------------------

    def _load(self, index: int, bucket: Bucket | None, rng: np.random.Generator) -> dict:
        row = self.manifest[index]
        caption = row.caption or ""
        text: dict = {}
        if self.text_cache is not None:  # first: a missing embedding fails before any decoding
            drop = self.text_drop_prob > 0 and rng.random() < self.text_drop_prob
            if drop:
                caption = ""
            embeddings = self._null() if drop else self.text_cache.get(cache_key(row.video, row.text_emb))
            for name, (emb, mask) in embeddings.items():
                text[f"{name}_emb"] = emb
                text[f"{name}_mask"] = mask
        choices = copy.deepcopy(rng.bit_generator.state)  # the condition repeats the sample's random choices
        key, (data, fps) = self._load_media(row, bucket, rng)
        sample = {key: data, **text, "caption": caption, "fps": np.float32(fps), "index": np.int64(index)}
        if self.condition_column is not None:
            source = row.extra.get(self.condition_column, "")
            if not source:
                raise MediaReadError(
                    f"{self.manifest.where(index)}: no video in column {self.condition_column!r}"
                )
            again = np.random.Generator(type(rng.bit_generator)())
            again.bit_generator.state = choices
            _, (condition, _) = self._load_media(
                dataclasses.replace(row, video=source, latent=None), bucket, again
            )
            if condition.shape != data.shape:
                raise MediaReadError(
                    f"{self.manifest.where(index)}: {self.condition_column} {source} gives shape {condition.shape}, "
                    f"the sample {data.shape}"
                )
            sample["condition"] = condition
        if self.reference_columns:
            sample["reference"] = self._load_reference(index, row, rng)
        return sample

    def _load_media(self, row: ManifestRow, bucket: Bucket | None, rng: np.random.Generator):
        """("latent", (latent, fps)) from the cache, else ("video", (pixels, fps))."""
        if self.latent_cache is not None:
            return "latent", self._load_latent(row, bucket, rng)
        return "video", self._load_pixels(row, bucket, rng)

    def _load_reference(self, index: int, row: ManifestRow, rng: np.random.Generator) -> np.ndarray:
        column = self.reference_columns[int(rng.integers(len(self.reference_columns)))]
        name = row.extra.get(column, "")
        if not name:
            raise MediaReadError(f"{self.manifest.where(index)}: no reference image in column {column!r}")
        image = read_image(self.manifest.root / name)
        size = self.reference_size
        return resize_crop(image, size, size, rng=None, interpolation=self.interpolation)[0]

    @property
    def output_keys(self) -> list[str]:
        """Keys of every sample, in order (e.g. the column names of a framework's dataset wrapper)."""
        keys = ["latent" if self.latent_cache is not None else "video"]
        for name in self.text_cache.encoders if self.text_cache is not None else []:
            keys += [f"{name}_emb", f"{name}_mask"]
        references = ["reference"] if self.reference_columns else []
        condition = ["condition"] if self.condition_column is not None else []
        return [*keys, "caption", "fps", "index", *references, *condition, "substituted"]

    def _null(self) -> dict:
        if self._null_text is None:
            self._null_text = self.text_cache.get(NULL_KEY + ".npz")
        return self._null_text

    def _load_pixels(
        self, row: ManifestRow, bucket: Bucket | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, float]:
        path = self.manifest.abspath(row)
        if is_image_path(row.video):
            frames, fps = read_image(path), IMAGE_FPS
        else:
            with VideoFile(path, num_threads=self.decode_threads) as video:
                count = bucket.num_frames if bucket is not None else self.sampling.num_frames
                indices = sample_frame_indices(video.num_frames, video.fps, self.sampling, rng, count)
                frames = video.read(indices)
                fps = self.sampling.output_fps(video.fps)
        size = (bucket.height, bucket.width) if bucket is not None else self.size
        if size is not None:
            frames = resize_crop(
                frames, *size, rng=rng if self.random_crop else None, interpolation=self.interpolation
            )
        if self.hflip and rng.random() < 0.5:
            frames = hflip(frames)
        return to_model_layout(frames), fps

    def _load_latent(
        self, row: ManifestRow, bucket: Bucket | None, rng: np.random.Generator
    ) -> tuple[np.ndarray, float]:
        key = cache_key(row.video, row.latent)
        z = self.latent_cache.sample(key, rng)
        if bucket is not None:
            wanted = latent_frames(bucket.num_frames, self.temporal_compression)
            expected = (bucket.height // self.spatial_compression, bucket.width // self.spatial_compression)
            if z.shape[2:] != expected:
                raise CacheError(
                    f"{self.latent_cache.path(key)}: latent size {z.shape[2:]} does not match bucket {bucket.name} {expected}"
                )
        else:
            wanted = self.num_latent_frames
        if wanted is not None and wanted != z.shape[1]:
            sampling = FrameSampling(
                num_frames=wanted, start=self.sampling.start, short_policy=self.sampling.short_policy
            )
            z = z[:, sample_frame_indices(z.shape[1], 0.0, sampling, rng)]
        fps = row.fps if row.fps is not None else 0.0
        return np.ascontiguousarray(z), fps

    # -- reporting ---------------------------------------------------------------------------------------------

    def report(self) -> str:
        """Files that failed so far and how many samples were substituted."""
        lines = [f"{len(self.errors)} unreadable samples, {self.num_substituted} substitutions"]
        lines += [
            f"  {self.manifest.where(i)}: {self.manifest.rows[i].video}: {reason}"
            for i, reason in sorted(self.errors.items())
        ]
        return "\n".join(lines)


def collate(samples: Sequence[dict]) -> dict:
    """Stack a list of samples into a batch: arrays gain a leading axis, strings become lists."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    batch = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        batch[key] = values if isinstance(values[0], str) else np.stack(values)
    return batch
