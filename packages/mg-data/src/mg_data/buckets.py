"""Aspect-ratio x duration buckets (plus image buckets) and a batch sampler that yields same-bucket batches.

Movie Gen trains on videos of several aspect ratios and lengths, and on images, in one run; a batch must hold
one shape. Each sample goes to its nearest bucket (nearest aspect ratio, then the longest clip it holds), and
`BucketBatchSampler` yields batches of one bucket at a time, with per-bucket batch sizes, deterministic in its
seed, sharded over ranks (every rank draws from the same bucket at the same step), resumable exactly, and
with statistics of what each bucket holds and drops.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mg_data.transforms import FrameSampling, cover_size, latent_frames
from mg_data.video_io import MediaInfo


@dataclass(frozen=True)
class Bucket:
    """One batch shape: frame size, frame count (1 = images) and the batch size per rank."""

    height: int
    width: int
    num_frames: int
    batch_size: int
    name: str = ""

    def __post_init__(self):
        for key in ("height", "width", "num_frames", "batch_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"bucket {self.name or '?'}: {key} must be a positive integer, got {value!r}"
                )
        if not self.name:
            object.__setattr__(
                self,
                "name",
                f"{'img' if self.is_image else f'{self.num_frames}f'}_{self.height}x{self.width}",
            )

    @property
    def is_image(self) -> bool:
        return self.num_frames == 1

    @property
    def aspect_ratio(self) -> float:
        """Height divided by width."""
        return self.height / self.width

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "height": self.height,
            "width": self.width,
            "num_frames": self.num_frames,
            "batch_size": self.batch_size,
        }


def parse_aspect_ratio(text: str | float) -> float:
    """'16:9' (width:height, the video convention) -> height / width = 0.5625; a number is taken as height / width."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        width, height = (float(part) for part in str(text).split(":"))
    except ValueError:
        raise ValueError(f"aspect ratio {text!r}: expected 'W:H' such as '16:9'") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"aspect ratio {text!r}: sides must be positive")
    return height / width


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


@dataclass
class BucketConfig:
    """A list of buckets plus the assignment policy.

    `max_upscale`: a sample that must be enlarged by more than this factor to cover its bucket is dropped
    ("too small"); None keeps everything. Build with `BucketConfig([...])`, `BucketConfig.grid(...)`, or from a
    dict / YAML file (`from_dict`, `from_yaml`) holding either `buckets: [{height, width, num_frames,
    batch_size}, ...]` or `grid: {resolution, aspect_ratios, num_frames, batch_size, image_batch_size, ...}`.
    """

    buckets: list[Bucket]
    max_upscale: float | None = None

    def __post_init__(self):
        if not self.buckets:
            raise ValueError("a bucket config needs at least one bucket")
        names = [bucket.name for bucket in self.buckets]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate bucket names {duplicates}")

    def __len__(self) -> int:
        return len(self.buckets)

    def __getitem__(self, index: int) -> Bucket:
        return self.buckets[index]

    @classmethod
    def grid(
        cls,
        resolution: int = 256,
        aspect_ratios: Sequence[str | float] = ("1:1", "16:9", "9:16"),
        num_frames: Sequence[int] = (16,),
        batch_size: int | Mapping[int, int] = 1,
        image_batch_size: int | None = None,
        multiple_of: int = 16,
        size_mode: str = "area",
        max_upscale: float | None = None,
    ) -> BucketConfig:
        """Movie Gen style buckets: every aspect ratio x every frame count, plus one image bucket per aspect
        ratio when `image_batch_size` is set. `size_mode` 'area' keeps about resolution² pixels per frame (equal
        token counts across aspect ratios); 'short_side' makes the shorter side `resolution`. Sides are rounded
        to `multiple_of` (TAE factor 8 x patch 2 = 16). `batch_size` may map frame count -> batch size."""
        if size_mode not in ("area", "short_side"):
            raise ValueError(f"size_mode must be 'area' or 'short_side', got {size_mode!r}")
        sizes = []
        for ratio in aspect_ratios:
            hw = parse_aspect_ratio(ratio)
            if size_mode == "area":
                height, width = resolution * math.sqrt(hw), resolution / math.sqrt(hw)
            else:
                height, width = (resolution, resolution / hw) if hw <= 1 else (resolution * hw, resolution)
            size = (_round_to(height, multiple_of), _round_to(width, multiple_of))
            if size not in sizes:
                sizes.append(size)
        buckets = []
        for frames in num_frames:
            if isinstance(batch_size, Mapping):
                if frames not in batch_size:
                    raise ValueError(
                        f"batch_size has no entry for {frames} frames (has {sorted(batch_size)})"
                    )
                size_for_frames = int(batch_size[frames])
            else:
                size_for_frames = int(batch_size)
            buckets += [Bucket(h, w, int(frames), size_for_frames) for h, w in sizes]
        if image_batch_size is not None:
            buckets += [Bucket(h, w, 1, int(image_batch_size)) for h, w in sizes]
        return cls(buckets, max_upscale=max_upscale)

    @classmethod
    def from_dict(cls, data: Mapping) -> BucketConfig:
        """From `{"buckets": [...]}` or `{"grid": {...}}` (plus optional `max_upscale`)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"bucket config must be a mapping, got {type(data).__name__}")
        unknown = set(data) - {"buckets", "grid", "max_upscale"}
        if unknown or ("buckets" in data) == ("grid" in data):
            raise ValueError(
                f"bucket config needs exactly one of 'buckets' or 'grid' (and optional 'max_upscale'), got keys {sorted(data)}"
            )
        max_upscale = data.get("max_upscale")
        if "grid" in data:
            grid = dict(data["grid"])
            if isinstance(grid.get("batch_size"), Mapping):
                grid["batch_size"] = {int(k): int(v) for k, v in grid["batch_size"].items()}
            try:
                return cls.grid(**grid, max_upscale=max_upscale)
            except TypeError as exc:
                raise ValueError(f"bucket grid: {exc}") from None
        buckets = []
        for i, entry in enumerate(data["buckets"]):
            try:
                buckets.append(Bucket(**entry))
            except TypeError as exc:
                raise ValueError(
                    f"buckets[{i}]: {exc} (fields: height, width, num_frames, batch_size, name)"
                ) from None
        return cls(buckets, max_upscale=max_upscale)

    @classmethod
    def from_yaml(cls, path: str | Path) -> BucketConfig:
        """Load a YAML file in the `from_dict` format."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read bucket config ({exc})") from None
        try:
            return cls.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def to_dict(self) -> dict:
        out: dict = {"buckets": [bucket.to_dict() for bucket in self.buckets]}
        if self.max_upscale is not None:
            out["max_upscale"] = self.max_upscale
        return out

    def _nearest_aspect(self, candidates: list[int], aspect_ratio: float) -> list[int]:
        """Candidates sharing the aspect ratio nearest to `aspect_ratio` (distance in log space)."""
        distances = [abs(math.log(self.buckets[i].aspect_ratio / aspect_ratio)) for i in candidates]
        best = min(distances)
        return [i for i, d in zip(candidates, distances, strict=True) if d <= best + 1e-9]

    def assign(self, info: MediaInfo, sampling: FrameSampling) -> tuple[int | None, str]:
        """(bucket index, '') for a decoded sample, or (None, reason) when it goes to no bucket.

        Images go to image buckets, videos to video buckets: nearest aspect ratio first, then the longest clip
        the video holds under `sampling` (stride or fps). A video shorter than every bucket is dropped under the
        'skip' policy and goes to the shortest bucket under 'loop' / 'pad'.
        """
        kind = "image" if info.is_image else "video"
        candidates = [i for i, bucket in enumerate(self.buckets) if bucket.is_image == info.is_image]
        if not candidates:
            return None, f"no {kind} bucket"
        candidates = self._nearest_aspect(candidates, info.aspect_ratio)
        if not info.is_image:
            fitting = [
                i for i in candidates if sampling.fits(info.num_frames, info.fps, self.buckets[i].num_frames)
            ]
            if fitting:
                candidates = fitting
            elif sampling.short_policy == "skip":
                shortest = min(self.buckets[i].num_frames for i in candidates)
                return (
                    None,
                    f"too short: {info.num_frames} frames, shortest bucket needs {sampling.span(info.fps, shortest)}",
                )
            else:
                shortest = min(self.buckets[i].num_frames for i in candidates)
                candidates = [i for i in candidates if self.buckets[i].num_frames == shortest]
        chosen = max(candidates, key=lambda i: (self.buckets[i].num_frames, -i))
        if self.max_upscale is not None:
            bucket = self.buckets[chosen]
            cover_h, _ = cover_size(info.height, info.width, bucket.height, bucket.width)
            if cover_h / info.height > self.max_upscale:
                return None, f"too small: {info.height}x{info.width} for bucket {bucket.name}"
        return chosen, ""

    def assign_latent(
        self,
        shape: Sequence[int],
        short_policy: str = "skip",
        spatial_compression: int = 8,
        temporal_compression: int = 8,
        is_image: bool | None = None,
    ) -> tuple[int | None, str]:
        """Bucket of a cached latent `(C, T', h, w)`: the spatial size must match a bucket's exactly (latents are
        not resized); then the longest bucket whose latent frame count ceil(T / 8) the latent holds.

        A one-frame latent is an image's unless `is_image` is False (a clip of at most 8 frames, known from its
        manifest row): that one goes to video buckets only, as decoded it would."""
        _, frames, height, width = (int(v) for v in shape)
        same_size = [
            i
            for i, bucket in enumerate(self.buckets)
            if (bucket.height // spatial_compression, bucket.width // spatial_compression) == (height, width)
        ]
        candidates = [i for i in same_size if not self.buckets[i].is_image]
        if (
            frames == 1 and is_image is not False
        ):  # an image latent: image buckets, else one-latent-frame videos
            candidates = [i for i in same_size if self.buckets[i].is_image] or [
                i for i in candidates if latent_frames(self.buckets[i].num_frames, temporal_compression) == 1
            ]
        if not candidates:
            return None, f"no bucket of latent size {height}x{width}"
        need = {i: latent_frames(self.buckets[i].num_frames, temporal_compression) for i in candidates}
        fitting = [i for i in candidates if need[i] <= frames]
        if not fitting:
            if short_policy == "skip":
                return None, f"too short: {frames} latent frames, shortest bucket needs {min(need.values())}"
            shortest = min(need.values())
            fitting = [i for i in candidates if need[i] == shortest]
        return max(fitting, key=lambda i: (need[i], self.buckets[i].num_frames, -i)), ""


@dataclass
class BucketAssignment:
    """Which bucket each sample of a dataset went to (-1 = none) and why the dropped ones were dropped."""

    bucket_ids: np.ndarray
    config: BucketConfig
    reasons: dict[int, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Samples per bucket name (every bucket listed, empty ones with 0)."""
        tally = Counter(int(b) for b in self.bucket_ids if b >= 0)
        return {bucket.name: tally.get(i, 0) for i, bucket in enumerate(self.config.buckets)}

    def drop_reasons(self) -> dict[str, int]:
        """Dropped samples per reason category (the text before ':' of each reason)."""
        return dict(Counter(reason.split(":")[0] for reason in self.reasons.values()))

    def members(self, bucket: int) -> np.ndarray:
        return np.flatnonzero(self.bucket_ids == bucket)


def assign_buckets(
    infos: Sequence[MediaInfo | BaseException | str | None],
    config: BucketConfig,
    sampling: FrameSampling,
) -> BucketAssignment:
    """Assign each sample from its metadata; an exception or string in `infos` marks it unreadable (dropped)."""
    ids = np.full(len(infos), -1, dtype=np.int64)
    reasons: dict[int, str] = {}
    for index, info in enumerate(infos):
        if not isinstance(info, MediaInfo):
            reasons[index] = f"unreadable: {info}"
            continue
        bucket, reason = config.assign(info, sampling)
        if bucket is None:
            reasons[index] = reason
        else:
            ids[index] = bucket
    return BucketAssignment(ids, config, reasons)


@dataclass
class BucketStats:
    """Per-bucket figures for one epoch on one rank's view (all ranks see the same numbers)."""

    name: str
    samples: int
    batch_size: int
    global_batch: int
    batches: int
    used: int
    dropped: int
    padded: int


class BucketBatchSampler:
    """Yields lists of sample indices; every batch comes from one bucket and has that bucket's batch size.

    - Deterministic: the order of an epoch depends only on (`seed`, epoch); `set_epoch` picks an epoch.
    - Sharded: each step forms one global batch of `batch_size * world_size` samples from one bucket and rank
      `rank` takes its slice, so all ranks see the same bucket (same shapes) at the same step and no sample
      repeats across ranks. Pass the data-parallel rank and size (ranks of one sequence-parallel group share data).
    - Leftovers: a bucket's last partial global batch is dropped (`drop_last=True`, counted in `stats()`) or
      filled with the bucket's first samples of the epoch (`drop_last=False`).
    - Joint image/video training: `image_ratio` is the fraction of steps that draw from image buckets; the
      video batches define the epoch and the image batches are drawn (cycling with fresh shuffles when there are
      too few, leaving some out when there are too many) so that the ratio holds exactly. None keeps every batch
      of every bucket once. 0 or 1 train videos only or images only.
    - Resume: `state_dict()` / `load_state_dict()` restore the exact position; an iterator that stops midway
      continues from there. With a prefetching loader pass the number of batches the model really consumed,
      `state_dict(consumed=n)` (counted from the state the sampler started in).
    - A saved state carries a fingerprint of the bucket layout; loading it for other data raises a clear error
      (or restarts that epoch's position with `strict=False`) instead of an index error deep in an epoch.
    """

    def __init__(
        self,
        buckets: BucketAssignment | Sequence[int] | np.ndarray,
        config: BucketConfig | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        image_ratio: float | None = None,
        epoch: int = 0,
        warn: bool = True,
    ):
        if isinstance(buckets, BucketAssignment):
            config = config or buckets.config
            self.assignment: BucketAssignment | None = buckets
            ids = buckets.bucket_ids
        else:
            self.assignment = None
            ids = np.asarray(buckets, dtype=np.int64)
        if config is None:
            raise ValueError(
                "BucketBatchSampler needs a BucketConfig (or a BucketAssignment that carries one)"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if image_ratio is not None and not 0 <= image_ratio <= 1:
            raise ValueError(f"image_ratio must be in [0, 1] or None, got {image_ratio}")
        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1 or (ids.size and (ids.min() < -1 or ids.max() >= len(config))):
            raise ValueError(f"bucket ids must be a 1-D array of values in [-1, {len(config)}), got {ids}")
        self.bucket_ids = ids
        self.config = config
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.shuffle, self.drop_last, self.image_ratio = shuffle, drop_last, image_ratio
        self.members = [np.flatnonzero(ids == b) for b in range(len(config))]
        self.epoch = int(epoch)
        self.position = 0
        self._start = (self.epoch, 0)
        self._yielded = 0
        self._length = len(self._plan(0))
        if warn:
            for message in self.warnings():
                warnings.warn(message, stacklevel=2)
        if self._length == 0:
            raise ValueError("the bucket sampler has no batch to yield:\n" + self.report())

    # -- epoch plan --------------------------------------------------------------------------------------------

    def _global_batches(self, bucket: int, rng: np.random.Generator) -> list[np.ndarray]:
        members = self.members[bucket]
        size = self.config[bucket].batch_size * self.world_size
        if members.size == 0:
            return []
        order = rng.permutation(members) if self.shuffle else members
        full = members.size // size
        batches = [order[i * size : (i + 1) * size] for i in range(full)]
        rest = members.size - full * size
        if rest and not self.drop_last:
            filler = np.resize(order, size - rest)  # repeats the order when a bucket is smaller than a batch
            batches.append(np.concatenate([order[full * size :], filler]))
        return batches

    def _plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """The epoch's global batches in order, as (bucket, indices) pairs."""
        rng = np.random.default_rng([self.seed, epoch])
        image = [
            (b, batch)
            for b in range(len(self.config))
            if self.config[b].is_image
            for batch in self._global_batches(b, rng)
        ]
        video = [
            (b, batch)
            for b in range(len(self.config))
            if not self.config[b].is_image
            for batch in self._global_batches(b, rng)
        ]
        ratio = self.image_ratio
        if ratio is None:
            plan = video + image
        elif ratio == 0:
            plan = video
        elif ratio == 1:
            plan = image
        else:
            wanted = round(len(video) * ratio / (1 - ratio))
            # Passes over the image buckets, each shuffled on its own, so no image repeats before all were seen.
            drawn: list[tuple[int, np.ndarray]] = []
            batches = image
            while batches and len(drawn) < wanted:
                drawn += [batches[i] for i in rng.permutation(len(batches))] if self.shuffle else batches
                batches = [
                    (b, batch)
                    for b in range(len(self.config))
                    if self.config[b].is_image
                    for batch in self._global_batches(b, rng)
                ]
            drawn = drawn[:wanted]
            plan = video + drawn
        if self.shuffle:
            plan = [plan[i] for i in rng.permutation(len(plan))]
        return plan

    # -- iteration ---------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        return self._length

    def __iter__(self) -> Iterator[list[int]]:
        """The rest of the current epoch for this rank; at its end the sampler moves to the next epoch."""
        plan = self._plan(self.epoch)
        while self.position < len(plan):
            bucket, batch = plan[self.position]
            size = self.config[bucket].batch_size
            self.position += 1
            self._yielded += 1
            yield batch[self.rank * size : (self.rank + 1) * size].tolist()
        self.epoch += 1
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch."""
        self.epoch, self.position = int(epoch), 0
        self._start, self._yielded = (self.epoch, 0), 0

    def batch_bucket(self, epoch: int, position: int) -> Bucket:
        """The bucket of a given step (the same on every rank), e.g. to pre-compile shapes."""
        return self.config[self._plan(epoch)[position][0]]

    # -- resume ------------------------------------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """Hash of everything that shapes an epoch: bucket ids, global batch sizes (per-rank batch x world size:
        8 ranks of 2 and 4 ranks of 4 form the same epochs, so a run may resume on another rank count), ratio,
        flags."""
        digest = hashlib.sha1(self.bucket_ids.tobytes())
        layout = [(b.batch_size * self.world_size, b.num_frames) for b in self.config.buckets]
        digest.update(repr((layout, self.image_ratio, self.shuffle, self.drop_last)).encode())
        return digest.hexdigest()[:16]

    def state_dict(self, consumed: int | None = None) -> dict:
        """The position to resume from: after the batches yielded so far, or after `consumed` batches counted
        from the state this sampler started in (construction, `set_epoch` or `load_state_dict`)."""
        if consumed is None:
            epoch, position = self.epoch, self.position
        else:
            total = self._start[1] + int(consumed)
            epoch, position = self._start[0] + total // self._length, total % self._length
        return {"epoch": epoch, "position": position, "seed": self.seed, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: Mapping, strict: bool = True) -> None:
        """Continue from a `state_dict()`. Raises ValueError when it was saved for another dataset/layout,
        unless `strict=False` (then the saved epoch restarts from its first batch, with a warning)."""
        missing = {"epoch", "position", "seed", "fingerprint"} - set(state)
        if missing:
            raise ValueError(f"sampler state lacks {sorted(missing)}")
        epoch, position = int(state["epoch"]), int(state["position"])
        if state["fingerprint"] != self.fingerprint or int(state["seed"]) != self.seed:
            message = (
                f"sampler state was saved for another data layout or seed (fingerprint {state['fingerprint']}, "
                f"seed {state['seed']}; now {self.fingerprint}, seed {self.seed})"
            )
            if strict:
                raise ValueError(message + "; pass strict=False to restart that epoch with the new layout")
            warnings.warn(message + f"; restarting epoch {epoch} from its first batch", stacklevel=2)
            position = 0
        if not 0 <= position <= self._length:
            raise ValueError(f"sampler state position {position} outside [0, {self._length}]")
        if position == self._length:
            epoch, position = epoch + 1, 0
        self.epoch, self.position = epoch, position
        self._start, self._yielded = (epoch, position), 0

    # -- statistics --------------------------------------------------------------------------------------------

    def stats(self) -> list[BucketStats]:
        """Per bucket: samples, batch sizes, batches per epoch and samples used / dropped / padded per epoch.
        With `image_ratio` set, image buckets show their natural counts (the ratio resamples them)."""
        out = []
        for bucket_index, bucket in enumerate(self.config.buckets):
            samples = int(self.members[bucket_index].size)
            size = bucket.batch_size * self.world_size
            full, rest = divmod(samples, size)
            batches = full + (1 if rest and not self.drop_last else 0)
            out.append(
                BucketStats(
                    name=bucket.name,
                    samples=samples,
                    batch_size=bucket.batch_size,
                    global_batch=size,
                    batches=batches,
                    used=full * size + (rest if not self.drop_last else 0),
                    dropped=rest if self.drop_last else 0,
                    padded=(size - rest) if rest and not self.drop_last else 0,
                )
            )
        return out

    def warnings(self) -> list[str]:
        """Empty buckets, buckets too small for one global batch, and an image ratio without image/video batches."""
        messages = []
        for stat in self.stats():
            if stat.samples == 0:
                messages.append(f"bucket {stat.name} holds no samples")
            elif stat.batches == 0:
                messages.append(
                    f"bucket {stat.name}: {stat.samples} samples < global batch {stat.global_batch}: all dropped every epoch"
                )
        has_image = any(
            s.batches for s, b in zip(self.stats(), self.config.buckets, strict=True) if b.is_image
        )
        has_video = any(
            s.batches for s, b in zip(self.stats(), self.config.buckets, strict=True) if not b.is_image
        )
        if self.image_ratio is not None and 0 < self.image_ratio < 1 and not (has_image and has_video):
            messages.append(
                f"image_ratio={self.image_ratio} but there are {'no image' if not has_image else 'no video'} batches"
            )
        return messages

    def report(self) -> str:
        """A table of `stats()` plus the dataset's drop reasons when built from a BucketAssignment."""
        lines = [
            f"{'bucket':<22}{'samples':>9}{'batch':>7}{'global':>8}{'batches':>9}{'used':>8}{'dropped':>9}{'padded':>8}"
        ]
        for s in self.stats():
            lines.append(
                f"{s.name:<22}{s.samples:>9}{s.batch_size:>7}{s.global_batch:>8}{s.batches:>9}{s.used:>8}{s.dropped:>9}{s.padded:>8}"
            )
        lines.append(
            f"batches per epoch: {self._length} (seed {self.seed}, rank {self.rank}/{self.world_size}, image_ratio {self.image_ratio})"
        )
        if self.assignment is not None and self.assignment.reasons:
            lines.append(f"not in any bucket: {len(self.assignment.reasons)} samples")
            for reason, count in sorted(self.assignment.drop_reasons().items()):
                lines.append(f"  {reason}: {count}")
        return "\n".join(lines)
