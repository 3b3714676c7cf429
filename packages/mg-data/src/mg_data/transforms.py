"""Frame-index sampling and numpy transforms from decoded `(T, H, W, 3)` uint8 frames to `(C, T, H, W)` float32.

Every spatial transform applies the same parameters to all frames of a clip. Randomness comes from a
`numpy.random.Generator` passed in, so a sample is reproducible from its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SHORT_POLICIES = ("skip", "loop", "pad")
STARTS = ("random", "center")


class ClipTooShort(ValueError):
    """A video has fewer frames than the requested clip needs and the short-video policy is 'skip'."""


@dataclass(frozen=True)
class FrameSampling:
    """How to pick `num_frames` frame indices from a video.

    - `stride`: distance between picked frames in source frames, or
    - `fps`: a target frame rate; the stride becomes `source_fps / fps` (fractional, rounded per frame),
      so clips cover the same time span whatever the source rate. `fps` overrides `stride`.
    - `start`: 'random' (uniform over valid starts) or 'center' (deterministic, for evaluation).
    - `short_policy` for videos shorter than the clip span: 'skip' (raise `ClipTooShort`; buckets drop them),
      'loop' (indices wrap around to the first frame), or 'pad' (the last frame repeats).
    """

    num_frames: int = 16
    stride: int = 1
    fps: float | None = None
    start: str = "random"
    short_policy: str = "skip"

    def __post_init__(self):
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.stride < 1:
            raise ValueError(f"stride must be >= 1, got {self.stride}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        if self.short_policy not in SHORT_POLICIES:
            raise ValueError(f"short_policy must be one of {SHORT_POLICIES}, got {self.short_policy!r}")

    def step(self, source_fps: float) -> float:
        """Distance in source frames between two picked frames."""
        if self.fps is None or source_fps <= 0:
            return float(self.stride)
        return source_fps / self.fps

    def span(self, source_fps: float, num_frames: int | None = None) -> int:
        """Source frames a clip of `num_frames` (default: this sampling's) covers, first to last inclusive."""
        n = self.num_frames if num_frames is None else num_frames
        return round((n - 1) * self.step(source_fps)) + 1

    def fits(self, available: int, source_fps: float, num_frames: int | None = None) -> bool:
        """True when a video of `available` frames holds a whole clip without looping or padding."""
        return available >= self.span(source_fps, num_frames)

    def output_fps(self, source_fps: float) -> float:
        """Frame rate of the sampled clip."""
        return source_fps / self.step(source_fps) if source_fps > 0 else 0.0


def sample_frame_indices(
    available: int,
    source_fps: float,
    sampling: FrameSampling,
    rng: np.random.Generator | None = None,
    num_frames: int | None = None,
) -> np.ndarray:
    """Indices of the frames of one clip (int64, length `num_frames` or `sampling.num_frames`).

    Raises `ClipTooShort` when the video is shorter than the clip and the policy is 'skip'.
    """
    if available < 1:
        raise ClipTooShort(f"video has {available} frames")
    n = sampling.num_frames if num_frames is None else num_frames
    step = sampling.step(source_fps)
    offsets = np.round(np.arange(n) * step).astype(np.int64)
    span = int(offsets[-1]) + 1
    if span <= available:
        slack = available - span
        if sampling.start == "center":
            start = slack // 2
        else:
            if rng is None:
                raise ValueError("start='random' needs a random generator")
            start = int(rng.integers(0, slack + 1))
        return start + offsets
    if sampling.short_policy == "skip":
        raise ClipTooShort(f"video has {available} frames, the clip needs {span} ({n} frames, step {step:g})")
    if sampling.short_policy == "loop":
        return offsets % available
    return np.minimum(offsets, available - 1)


def _pil_resample(name: str):
    from PIL import Image

    table = {
        "nearest": Image.Resampling.NEAREST,
        "bilinear": Image.Resampling.BILINEAR,
        "bicubic": Image.Resampling.BICUBIC,
        "area": Image.Resampling.BOX,
        "lanczos": Image.Resampling.LANCZOS,
    }
    if name not in table:
        raise ValueError(f"interpolation must be one of {sorted(table)}, got {name!r}")
    return table[name]


def resize(frames: np.ndarray, height: int, width: int, interpolation: str = "bicubic") -> np.ndarray:
    """Resize `(T, H, W, 3)` uint8 frames to `(T, height, width, 3)` with Pillow (per frame, same filter)."""
    from PIL import Image

    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    resample = _pil_resample(interpolation)
    out = np.empty((frames.shape[0], height, width, frames.shape[3]), dtype=np.uint8)
    for t, frame in enumerate(frames):
        out[t] = np.asarray(Image.fromarray(frame).resize((width, height), resample=resample))
    return out


def cover_size(height: int, width: int, target_height: int, target_width: int) -> tuple[int, int]:
    """Smallest aspect-preserving size (rounded, never below the target) that covers `target`."""
    scale = max(target_height / height, target_width / width)
    return max(target_height, round(height * scale)), max(target_width, round(width * scale))


def crop_offsets(
    height: int, width: int, target_height: int, target_width: int, rng: np.random.Generator | None = None
) -> tuple[int, int]:
    """Top-left corner of a crop: centred, or uniformly random when `rng` is given."""
    if target_height > height or target_width > width:
        raise ValueError(f"cannot crop {target_height}x{target_width} from {height}x{width}")
    if rng is None:
        return (height - target_height) // 2, (width - target_width) // 2
    return int(rng.integers(0, height - target_height + 1)), int(rng.integers(0, width - target_width + 1))


def crop(frames: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """A spatial window of `(T, H, W, C)` frames (a view)."""
    return frames[:, top : top + height, left : left + width]


def resize_crop(
    frames: np.ndarray,
    height: int,
    width: int,
    rng: np.random.Generator | None = None,
    interpolation: str = "bicubic",
) -> np.ndarray:
    """Aspect-preserving resize so the frames cover `height` x `width`, then a centre (or random, given `rng`) crop.

    This is the 'resize to a bucket' transform; with a square target it is 'resize shortest side + crop'.
    """
    cover_h, cover_w = cover_size(frames.shape[1], frames.shape[2], height, width)
    frames = resize(frames, cover_h, cover_w, interpolation)
    top, left = crop_offsets(cover_h, cover_w, height, width, rng)
    return crop(frames, top, left, height, width)


def resize_shortest_side(frames: np.ndarray, size: int, interpolation: str = "bicubic") -> np.ndarray:
    """Aspect-preserving resize so the shorter side equals `size`."""
    h, w = frames.shape[1:3]
    scale = size / min(h, w)
    return resize(frames, max(size, round(h * scale)), max(size, round(w * scale)), interpolation)


def hflip(frames: np.ndarray) -> np.ndarray:
    """Mirror `(T, H, W, C)` frames left-right (a view)."""
    return frames[:, :, ::-1]


# Frames of at least this many pixels are converted plane by plane (below, one call is cheaper than the loop).
PLANEWISE_MIN_PIXELS = 128 * 128


def to_model_layout(frames: np.ndarray) -> np.ndarray:
    """uint8 `(T, H, W, C)` -> float32 `(C, T, H, W)` in [-1, 1] (x / 127.5 - 1).

    Large frames go one plane at a time: a plane (256 KB of float32 at 256x256) stays in cache between the copy,
    the scale and the shift, and each pass is a contiguous, vectorised loop; one strided call over the whole clip
    is 1.2x slower at 256x256 (numpy's buffered cast of interleaved RGB), but 2-4x faster at 64x64 and below,
    where the loop's per-call cost dominates.
    """
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"expected (T, H, W, C) uint8 frames, got {frames.dtype} {frames.shape}")
    out = np.empty((frames.shape[3], *frames.shape[:3]), dtype=np.float32)
    scale, one = np.float32(1 / 127.5), np.float32(1.0)
    if frames.shape[1] * frames.shape[2] < PLANEWISE_MIN_PIXELS:
        np.multiply(frames.transpose(3, 0, 1, 2), scale, out=out, dtype=np.float32)
        out -= one
        return out
    for t in range(frames.shape[0]):
        for c in range(frames.shape[3]):
            plane = out[c, t]
            np.copyto(plane, frames[t, :, :, c])
            plane *= scale
            plane -= one
    return out


def to_uint8_frames(video: np.ndarray) -> np.ndarray:
    """float `(3, T, H, W)` in [-1, 1] -> uint8 `(T, H, W, 3)` (the inverse of `to_model_layout`, rounded, clipped)."""
    video = np.asarray(video, dtype=np.float32)
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a (3, T, H, W) video, got shape {video.shape}")
    return np.clip(np.rint((video + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 3, 0)


def latent_frames(num_frames: int, temporal_compression: int = 8) -> int:
    """Latent frame count of a clip (`ceil(T / 8)` for the TAE; an image is one latent frame)."""
    return max(1, math.ceil(num_frames / temporal_compression))
