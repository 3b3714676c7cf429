"""A deterministic synthetic captioned video dataset, and a checker that reads colour, shape and motion back.

Clips show one saturated shape (colour x shape) moving in a straight line (direction) over a muted, textured,
static background, captioned "a red circle moving left". The manifest carries the ground truth (`color`,
`shape`, `direction`, start and end centre) so that tests and the quickstart can verify what a model
generates with `analyze_clip`, which estimates the dominant moving colour, its shape and its direction.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mg_data.atomic import write_text
from mg_data.manifest import ManifestRow, write_manifest
from mg_data.video_io import write_image, write_video

# Saturated, 60 degrees apart in hue, so the colour of a (possibly blurry) shape is easy to read back.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "yellow": (235, 215, 30),
    "green": (35, 200, 55),
    "cyan": (30, 205, 215),
    "blue": (40, 75, 235),
    "magenta": (215, 40, 210),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
DEFAULT_COLORS = ("red", "green", "blue", "yellow")
BACKGROUNDS = ("stripes", "checker", "blobs")


def check_vocabulary(colors: Sequence[str], shapes: Sequence[str], directions: Sequence[str]) -> None:
    """Raise ValueError unless each list is a non-empty subset of the known colours, shapes and directions."""
    for name, chosen, known in (
        ("color", colors, COLORS),
        ("shape", shapes, SHAPES),
        ("direction", directions, DIRECTIONS),
    ):
        unknown = [value for value in chosen if value not in known]
        if unknown or not chosen:
            raise ValueError(f"{name}s must be a non-empty subset of {list(known)}, got {list(chosen)}")


def caption_for(color: str, shape: str, direction: str | None) -> str:
    """The caption of a clip ("a red circle moving left") or of a still image ("a red circle")."""
    return f"a {color} {shape}" + (f" moving {direction}" if direction else "")


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip (or image when `num_frames == 1`)."""

    color: str
    shape: str
    direction: str | None
    size: tuple[int, int]
    num_frames: int
    radius: float
    start: tuple[float, float]  # centre (x, y) in pixels at the first frame
    end: tuple[float, float]  # centre at the last frame
    background: str
    background_seed: int
    texture_contrast: float = 1.0  # multiplies the background texture's drawn contrast (0: flat)
    canonical_background: bool = (
        False  # the kind's canonical pattern (a background edit's target), not a drawn one
    )

    @property
    def caption(self) -> str:
        return caption_for(self.color, self.shape, self.direction)


# What "change the background to <kind>" paints: one pattern per kind (scale, orientation and phase as fractions of
# the shorter side), so the instruction fixes the target; the clips' own backgrounds draw theirs at random.
CANONICAL_PATTERNS = {
    "stripes": {"angle": np.pi / 4, "period": 0.3, "phase": 0.0},
    "checker": {"cell": 0.25, "offset": (0.0, 0.0)},
    "blobs": {
        "waves": ((1.0, 1.5, 0.0, 1.0), (2.0, 0.75, 2.0, 0.5), (0.75, 2.0, 1.0, 3.0), (1.5, 1.25, 4.0, 2.0))
    },
}


def _pattern_params(kind: str, rng: np.random.Generator | None) -> dict:
    """The pattern's parameters: drawn from `rng`, or the kind's canonical ones when `rng` is None."""
    if kind not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {kind!r}")
    if rng is None:
        return CANONICAL_PATTERNS[kind]
    if kind == "stripes":
        return {
            "angle": rng.uniform(0, np.pi),
            "period": rng.uniform(0.15, 0.35),
            "phase": rng.uniform(0, 2 * np.pi),
        }
    if kind == "checker":
        cell = rng.uniform(0.12, 0.25)
        return {"cell": cell, "offset": tuple(rng.uniform(0, cell, size=2))}
    # blobs: four products of sines, 0.5-2.5 periods across the frame (fx, fy) with phases (px, py)
    return {
        "waves": tuple((*rng.uniform(0.5, 2.5, size=2), *rng.uniform(0, 2 * np.pi, size=2)) for _ in range(4))
    }


def _background(
    kind: str,
    height: int,
    width: int,
    rng: np.random.Generator,
    contrast_scale: float = 1.0,
    canonical: bool = False,
) -> np.ndarray:
    """A muted (low saturation), mid-brightness texture as float32 (H, W, 3) in [0, 1].

    Its look (brightness, colour cast, contrast) is drawn before the pattern, so one seed gives the same look for
    every `kind`: a background edit ("change the background to checker") changes the pattern and nothing else.
    `canonical`: the kind's pattern from CANONICAL_PATTERNS (a background edit's target) instead of a random one."""
    base = rng.uniform(0.35, 0.6)
    tint = rng.uniform(-0.04, 0.04, size=3)  # a faint colour cast keeps saturation well below the shapes'
    contrast = rng.uniform(0.06, 0.12) * contrast_scale
    params = _pattern_params(kind, None if canonical else rng)
    side = min(height, width)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "stripes":
        angle, period = params["angle"], params["period"] * side
        along = x * np.cos(angle) + y * np.sin(angle)
        pattern = np.sin(along * (2 * np.pi / period) + params["phase"])
    elif kind == "checker":
        cell = params["cell"] * side
        ox, oy = (o * side for o in params["offset"])
        pattern = np.where((np.floor((x + ox) / cell) + np.floor((y + oy) / cell)) % 2 == 0, 1.0, -1.0)
    else:
        pattern = np.zeros((height, width), np.float32)
        for fx, fy, px, py in params["waves"]:
            pattern += np.sin(x / width * fx * 2 * np.pi + px) * np.sin(y / height * fy * 2 * np.pi + py)
        pattern /= max(1e-6, float(np.abs(pattern).max()))
    return np.clip(base + tint[None, None, :] + contrast * pattern[..., None], 0.0, 1.0).astype(np.float32)


def _coverage(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, radius: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape centred at (cx, cy) over pixel centres (x, y)."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = radius - np.sqrt(dx * dx + dy * dy)
    elif shape == "square":
        half = radius * 0.886  # same area as the circle
        inside = half - np.maximum(np.abs(dx), np.abs(dy))
    elif shape == "triangle":
        # Equilateral, pointing up, circumradius 1.3 r; signed distance to its three edges.
        big = radius * 1.3
        apothem = big / 2
        inside = np.full(x.shape, np.inf, dtype=np.float32)
        for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
            nx, ny = np.cos(angle), np.sin(angle)  # outward normals, with image y pointing down
            inside = np.minimum(inside, apothem - (dx * nx + dy * ny))
    else:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    return np.clip(inside + 0.5, 0.0, 1.0).astype(np.float32)


def render_clip(spec: ClipSpec) -> np.ndarray:
    """The frames of a clip as `(T, H, W, 3)` uint8. Only a window around the shape is redrawn per frame."""
    height, width = spec.size
    background = _background(
        spec.background,
        height,
        width,
        np.random.default_rng(spec.background_seed),
        spec.texture_contrast,
        spec.canonical_background,
    )
    plain = np.rint(background * 255.0).astype(np.uint8)
    color = np.asarray(COLORS[spec.color], np.float32) / 255.0
    reach = spec.radius * 1.35 + 2  # covers the triangle's corners and the anti-aliased rim
    frames = np.empty((spec.num_frames, height, width, 3), np.uint8)
    for t in range(spec.num_frames):
        a = t / (spec.num_frames - 1) if spec.num_frames > 1 else 0.0
        cx = spec.start[0] + a * (spec.end[0] - spec.start[0])
        cy = spec.start[1] + a * (spec.end[1] - spec.start[1])
        x0, x1 = max(0, int(cx - reach)), min(width, int(np.ceil(cx + reach)) + 1)
        y0, y1 = max(0, int(cy - reach)), min(height, int(np.ceil(cy + reach)) + 1)
        y, x = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        cov = _coverage(spec.shape, x, y, cx, cy, spec.radius)[..., None]
        frames[t] = plain
        window = background[y0:y1, x0:x1]
        frames[t, y0:y1, x0:x1] = np.rint((window * (1 - cov) + color * cov) * 255.0).astype(np.uint8)
    return frames


def _clip_spec(
    color: str,
    shape: str,
    direction: str | None,
    size: tuple[int, int],
    num_frames: int,
    travel: float,
    rng: np.random.Generator,
    shape_size: tuple[float, float] = (0.11, 0.15),
    texture_contrast: float = 1.0,
    start_jitter: float = 1.0,
) -> ClipSpec:
    height, width = size
    radius = float(rng.uniform(*shape_size) * min(height, width))
    margin = radius * 1.35 + 1  # keeps the whole shape (incl. the triangle's corners) inside the frame
    if direction is None:
        start = (float(rng.uniform(margin, width - margin)), float(rng.uniform(margin, height - margin)))
        end = start
    else:
        ux, uy = DIRECTIONS[direction]
        extent = width if ux else height
        distance = travel * (extent - 2 * margin)
        lo_x, hi_x = margin, width - margin
        lo_y, hi_y = margin, height - margin
        if ux > 0:
            hi_x -= distance
        elif ux < 0:
            lo_x += distance
        if uy > 0:
            hi_y -= distance
        elif uy < 0:
            lo_y += distance
        # travel=1 leaves an empty range along the motion (up to rounding): start at its low end then
        hi_x, hi_y = max(hi_x, lo_x), max(hi_y, lo_y)
        # start_jitter < 1 keeps the start within that share of the range, next to the edge behind the motion
        if ux:
            span = (1 - start_jitter) * (hi_x - lo_x)
            lo_x, hi_x = (lo_x, hi_x - span) if ux > 0 else (lo_x + span, hi_x)
        else:
            span = (1 - start_jitter) * (hi_y - lo_y)
            lo_y, hi_y = (lo_y, hi_y - span) if uy > 0 else (lo_y + span, hi_y)
        start = (float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y)))
        end = (start[0] + ux * distance, start[1] + uy * distance)
    return ClipSpec(
        color=color,
        shape=shape,
        direction=direction,
        size=size,
        num_frames=num_frames,
        radius=radius,
        start=start,
        end=end,
        background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        background_seed=int(rng.integers(2**31)),
        texture_contrast=texture_contrast,
    )


@dataclass
class SyntheticDataset:
    """Where `make_synthetic_dataset` wrote things. Manifest paths are relative to `root`."""

    root: Path
    train_manifest: Path
    val_manifest: Path
    all_manifest: Path
    num_train: int
    num_val: int
    captions: list[str] = field(default_factory=list)
    holdout_captions: list[str] = field(default_factory=list)


def _as_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


def make_synthetic_dataset(
    out: str | os.PathLike,
    n: int = 100,
    seed: int = 0,
    size: int | Sequence[int] = 64,
    num_frames: int = 16,
    fps: float = 8.0,
    colors: Sequence[str] = DEFAULT_COLORS,
    shapes: Sequence[str] = SHAPES,
    directions: Sequence[str] = tuple(DIRECTIONS),
    val_fraction: float = 0.1,
    holdout_captions: Sequence[str] = (),
    num_images: int = 0,
    travel: float = 0.6,
    crf: int = 16,
    verbose: bool = False,
    shape_size: Sequence[float] = (0.11, 0.15),
    texture_contrast: float = 1.0,
    start_jitter: float = 1.0,
) -> SyntheticDataset:
    """Write `n` captioned mp4 clips (plus `num_images` png stills) and train/val/all manifests under `out`.

    Deterministic in `seed`: the same arguments give the same frames, captions and split. Captions cycle
    through all colour x shape x direction combinations in a seeded order, so every caption appears about
    equally often. Clips whose caption is in `holdout_captions` go only to the validation manifest (captions
    never seen in training); of the rest, a seeded `val_fraction` goes to validation too. `travel` is the
    distance moved over the clip as a fraction of the free space along the direction; `start_jitter` is the
    share of the remaining room along the direction where a clip may start (0: always at the edge behind the
    motion, so the direction also fixes where the shape is in every frame). `shape_size` is the
    (low, high) range of a shape's radius as a fraction of the shorter side; `texture_contrast` scales the
    backgrounds' texture (0 gives flat backgrounds): larger shapes on fainter textures are what a very small
    autoencoder learns first (the quickstart uses them). Layout:
    `videos/000000.mp4`, `images/000000.png`, `train.csv`, `val.csv`, `all.csv` (with a `split` column),
    `synth.json` (the arguments). Takes a few seconds for ~100 small clips.
    """
    height, width = _as_size(size)
    check_vocabulary(colors, shapes, directions)
    if n < 0 or num_images < 0 or n + num_images == 0:
        raise ValueError(f"need at least one clip or image, got n={n}, num_images={num_images}")
    if num_frames < 2:
        raise ValueError(f"a clip needs at least 2 frames to show motion, got num_frames={num_frames}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0 < travel <= 1:
        raise ValueError(f"travel must be in (0, 1], got {travel}")
    shape_size = tuple(float(v) for v in shape_size)
    if len(shape_size) != 2 or not 0.02 <= shape_size[0] <= shape_size[1] <= 0.3:
        raise ValueError(
            f"shape_size must be a (low, high) radius range with 0.02 <= low <= high <= 0.3 (fractions of the "
            f"shorter side), got {shape_size}"
        )
    if not 0 <= start_jitter <= 1:
        raise ValueError(
            f"start_jitter must be in [0, 1] (1 = start anywhere the motion fits), got {start_jitter}"
        )
    if not 0 <= texture_contrast <= 4:
        raise ValueError(f"texture_contrast must be in [0, 4] (1 = default texture), got {texture_contrast}")
    combos = list(itertools.product(colors, shapes, directions))
    all_captions = [caption_for(*combo) for combo in combos]
    unknown_holdout = [caption for caption in holdout_captions if caption not in all_captions]
    if unknown_holdout:
        raise ValueError(f"holdout captions {unknown_holdout} are not among the generated captions")

    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()

    def balanced(items: list, count: int) -> list:
        order: list = []
        while len(order) < count:
            order.extend(items[i] for i in rng.permutation(len(items)))
        return order[:count]

    rows: list[ManifestRow] = []
    splits: list[str] = []
    for index, (color, shape, direction) in enumerate(balanced(combos, n)):
        spec = _clip_spec(
            color,
            shape,
            direction,
            (height, width),
            num_frames,
            travel,
            rng,
            shape_size,
            texture_contrast,
            start_jitter,
        )
        relpath = f"videos/{index:06d}.mp4"
        write_video(out / relpath, render_clip(spec), fps=fps, crf=crf)
        rows.append(_row(relpath, spec, fps))
        splits.append("val" if spec.caption in holdout_captions else "")
        if verbose and (index + 1) % 25 == 0:
            print(f"synth: {index + 1}/{n} clips ({time.perf_counter() - started:.1f} s)", flush=True)
    image_combos = list(itertools.product(colors, shapes))
    for index, (color, shape) in enumerate(balanced(image_combos, num_images)):
        spec = _clip_spec(color, shape, None, (height, width), 1, travel, rng, shape_size, texture_contrast)
        relpath = f"images/{index:06d}.png"
        write_image(out / relpath, render_clip(spec)[0])
        rows.append(_row(relpath, spec, 1.0))
        splits.append("")

    free = [i for i, split in enumerate(splits) if not split]
    num_val = round(val_fraction * len(free))
    val_picks = set(rng.choice(free, size=num_val, replace=False).tolist()) if num_val else set()
    splits = [split or ("val" if i in val_picks else "train") for i, split in enumerate(splits)]

    train_rows = [row for row, split in zip(rows, splits, strict=True) if split == "train"]
    val_rows = [row for row, split in zip(rows, splits, strict=True) if split == "val"]
    columns = ["video", "caption", "num_frames", "height", "width", "fps", "color", "shape", "direction"]
    columns += ["start_x", "start_y", "end_x", "end_y"]
    paths = {name: out / f"{name}.csv" for name in ("train", "val", "all")}
    write_manifest(paths["train"], train_rows, columns)
    write_manifest(paths["val"], val_rows, columns)
    for row, split in zip(rows, splits, strict=True):
        row.extra["split"] = split
    write_manifest(paths["all"], rows, [*columns, "split"])
    settings = {
        "n": n,
        "seed": seed,
        "size": [height, width],
        "num_frames": num_frames,
        "fps": fps,
        "colors": list(colors),
        "shapes": list(shapes),
        "directions": list(directions),
        "val_fraction": val_fraction,
        "holdout_captions": list(holdout_captions),
        "num_images": num_images,
        "travel": travel,
        "crf": crf,
        "shape_size": list(shape_size),
        "texture_contrast": texture_contrast,
        "start_jitter": start_jitter,
    }
    write_text(out / "synth.json", json.dumps(settings, indent=2) + "\n")
    if verbose:
        print(
            f"synth: wrote {n} clips and {num_images} images to {out} "
            f"({len(train_rows)} train, {len(val_rows)} val) in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    return SyntheticDataset(
        root=out,
        train_manifest=paths["train"],
        val_manifest=paths["val"],
        all_manifest=paths["all"],
        num_train=len(train_rows),
        num_val=len(val_rows),
        captions=all_captions,
        holdout_captions=list(holdout_captions),
    )


def _row(relpath: str, spec: ClipSpec, fps: float) -> ManifestRow:
    height, width = spec.size
    extra = {
        "color": spec.color,
        "shape": spec.shape,
        "direction": spec.direction or "none",
        "start_x": f"{spec.start[0]:.2f}",
        "start_y": f"{spec.start[1]:.2f}",
        "end_x": f"{spec.end[0]:.2f}",
        "end_y": f"{spec.end[1]:.2f}",
    }
    return ManifestRow(
        video=relpath,
        caption=spec.caption,
        num_frames=spec.num_frames,
        height=height,
        width=width,
        fps=fps,
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------------------------
# Reading the ground truth back from pixels


@dataclass
class ClipAnalysis:
    """What `analyze_clip` read from a clip.

    `color` is the palette colour with the most saturated pixels (None if almost none), `color_share` its share
    of all saturated pixels, `shape` the best match of its outline (None if too small), `direction` the dominant axis of its
    centre's motion ('none' when it moved less than `min_travel` of the frame), `displacement` (dx, dy) in
    pixels from the first to the last frame along a least-squares line, `coverage` the mean fraction of a frame
    the colour covers, `largest_step_share` the share of the centre's path (frame to frame) covered by its largest
    step: about 1/(T-1) for smooth motion, 1.0 for a shape that stands still and jumps once (NaN when the centre
    moves less than half a pixel in all or is found in fewer than two frames).
    """

    color: str | None
    color_share: float
    shape: str | None
    direction: str
    displacement: tuple[float, float]
    coverage: float
    largest_step_share: float = float("nan")

    def matches(
        self, color: str | None = None, shape: str | None = None, direction: str | None = None
    ) -> bool:
        """True when every given attribute equals the estimate."""
        return (
            (color is None or color == self.color)
            and (shape is None or shape == self.shape)
            and (direction is None or direction == self.direction)
        )

    def to_dict(self) -> dict:
        return asdict(self)


def _as_frames(video: np.ndarray, layout: str | None) -> np.ndarray:
    """Any supported clip layout -> float32 (T, H, W, 3) in [0, 1]."""
    video = np.asarray(video)
    if layout is None:
        layout = "THWC" if video.dtype == np.uint8 else "CTHW"
    if layout == "THWC":
        frames = video if video.ndim == 4 else video[None]
        frames = frames.astype(np.float32) / 255.0 if frames.dtype == np.uint8 else frames.astype(np.float32)
    elif layout == "CTHW":
        frames = video if video.ndim == 4 else video[:, None]
        frames = (frames.astype(np.float32).transpose(1, 2, 3, 0) + 1.0) / 2.0
    else:
        raise ValueError(f"layout must be 'CTHW' (float in [-1, 1]) or 'THWC' (uint8), got {layout!r}")
    if frames.shape[-1] != 3:
        raise ValueError(f"expected 3 colour channels, got a clip of shape {video.shape} as {layout}")
    return np.clip(frames, 0.0, 1.0)


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of float RGB (..., 3)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2 * r - g - b)) + 360.0) % 360.0


def _estimate_shape(mask: np.ndarray) -> str | None:
    """Circle, square or triangle from two features of each frame's mask inside its bounding box (medians over
    frames): the fill ratio (circle pi/4, square 1, triangle 1/2) and how full the box's four corners are
    (square full, circle empty, the upward triangle half full)."""
    fills, corners = [], []
    for frame in mask:
        rows, cols = np.nonzero(frame)
        if rows.size < 9:
            continue
        box = frame[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        ph, pw = max(1, round(0.2 * box.shape[0])), max(1, round(0.2 * box.shape[1]))
        patches = (box[:ph, :pw], box[:ph, -pw:], box[-ph:, :pw], box[-ph:, -pw:])
        fills.append(box.mean())
        corners.append(np.mean([patch.mean() for patch in patches]))
    if not fills:
        return None
    fill, corner = float(np.median(fills)), float(np.median(corners))
    if fill < 0.68:
        return "triangle"
    return "square" if corner > 0.42 else "circle"


def analyze_clip(
    video: np.ndarray,
    layout: str | None = None,
    colors: Sequence[str] = tuple(COLORS),
    min_saturation: float = 0.45,
    min_value: float = 0.3,
    min_travel: float = 0.08,
) -> ClipAnalysis:
    """Estimate the dominant saturated colour, its shape and its motion direction in a clip.

    `video` is a model-layout clip `(3, T, H, W)` float in [-1, 1] (the default for float input) or decoded
    frames `(T, H, W, 3)` uint8; pass `layout` to force one. Background pixels are told apart by saturation
    (the synthetic backgrounds are muted), colours by nearest hue among `colors`.
    """
    frames = _as_frames(video, layout)
    num_frames, height, width = frames.shape[:3]
    vmax, vmin = frames.max(axis=-1), frames.min(axis=-1)
    saturation = (vmax - vmin) / np.maximum(vmax, 1e-6)
    salient = (saturation >= min_saturation) & (vmax >= min_value)
    palette = np.array([_hue(np.asarray(COLORS[c], np.float32) / 255.0) for c in colors])
    hue = _hue(frames)
    distance = np.abs((hue[..., None] - palette + 180.0) % 360.0 - 180.0)
    nearest = np.argmin(distance, axis=-1)
    counts = np.bincount(nearest[salient], minlength=len(colors))
    total = int(counts.sum())
    if total < max(4, 0.002 * num_frames * height * width):
        return ClipAnalysis(None, 0.0, None, "none", (0.0, 0.0), 0.0)
    best = int(np.argmax(counts))
    mask = salient & (nearest == best)

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    times, cxs, cys = [], [], []
    for t in range(num_frames):
        area = mask[t].sum()
        if area >= 3:
            times.append(t)
            cxs.append(float((xs * mask[t]).sum() / area))
            cys.append(float((ys * mask[t]).sum() / area))
    dx = dy = 0.0
    if len(times) >= 2:
        tt = np.asarray(times, np.float64)
        span = (num_frames - 1) if num_frames > 1 else 1
        dx = float(np.polyfit(tt, cxs, 1)[0] * span)
        dy = float(np.polyfit(tt, cys, 1)[0] * span)
    if max(abs(dx) / width, abs(dy) / height) < min_travel:
        direction = "none"
    elif abs(dx) / width >= abs(dy) / height:
        direction = "right" if dx > 0 else "left"
    else:
        direction = "down" if dy > 0 else "up"

    # The outline uses a stricter saturation cut: yuv420 chroma bleeds a half-saturated rim around shapes.
    shape = _estimate_shape(mask & (saturation >= max(min_saturation, 0.6)))
    return ClipAnalysis(
        color=colors[best],
        color_share=float(counts[best] / total),
        shape=shape,
        direction=direction,
        displacement=(dx, dy),
        coverage=float(mask.mean()),
        largest_step_share=_largest_step_share(cxs, cys),
    )


def _largest_step_share(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Largest frame-to-frame step of a tracked centre over its whole path (NaN under half a pixel of path)."""
    steps = np.hypot(np.diff(np.asarray(xs, np.float64)), np.diff(np.asarray(ys, np.float64)))
    path = float(steps.sum())
    return float(steps.max() / path) if steps.size and path >= 0.5 else float("nan")
