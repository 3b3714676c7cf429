"""A synthetic personalisation (PT2V) set: clips of a "subject" whose identity only the reference image shows.

The subject is a shape's colour and form (a red triangle); a clip shows it moving over a textured background and
is captioned by its motion alone ("the subject moving left"), so a model can only get the colour and form
right from the reference. Every clip has two references, each a still of the subject on a plain grey
background: `reference`, taken from the clip itself (its first frame's size and position, like Movie Gen's
paired data), and `cross_reference`, the same subject at another size and position (the "cross-paired" data
that stops a model from copying the reference's pose). Subjects in `holdout_subjects` appear only in
validation, so a test can ask whether the model follows a reference it never trained with.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mg_data.atomic import write_text
from mg_data.manifest import write_manifest
from mg_data.synth import (
    COLORS,
    DEFAULT_COLORS,
    DIRECTIONS,
    SHAPES,
    _as_size,
    _clip_spec,
    _coverage,
    _row,
    check_vocabulary,
    render_clip,
)
from mg_data.video_io import write_image, write_video

PLAIN_GREY = 0.5  # the references' background


def subject_caption(direction: str) -> str:
    """A caption that names the motion, never the subject ("the subject moving left")."""
    return f"the subject moving {direction}"


def render_reference(
    color: str, shape: str, size: int, radius: float, centre: tuple[float, float]
) -> np.ndarray:
    """A still of the subject on a plain grey background: (size, size, 3) uint8, anti-aliased like the clips."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cov = _coverage(shape, x, y, centre[0], centre[1], radius)[..., None]
    rgb = np.asarray(COLORS[color], np.float32) / 255.0
    return np.rint((PLAIN_GREY * (1 - cov) + rgb * cov) * 255.0).astype(np.uint8)


@dataclass
class PersonalizationDataset:
    """Where `make_personalization_dataset` wrote things; manifest paths are relative to `root`."""

    root: Path
    train_manifest: Path
    val_manifest: Path
    num_train: int
    num_val: int
    holdout_subjects: list[tuple[str, str]]


def make_personalization_dataset(
    out: str | os.PathLike,
    n: int = 96,
    seed: int = 0,
    size: int = 64,
    num_frames: int = 16,
    fps: float = 8.0,
    colors: Sequence[str] = DEFAULT_COLORS,
    shapes: Sequence[str] = SHAPES,
    directions: Sequence[str] = tuple(DIRECTIONS),
    holdout_subjects: Sequence[tuple[str, str]] = (),
    val_fraction: float = 0.1,
    travel: float = 0.6,
    shape_size: Sequence[float] = (0.16, 0.2),
    cross_shape_size: Sequence[float] = (0.1, 0.25),
    texture_contrast: float = 0.4,
    crf: int = 16,
) -> PersonalizationDataset:
    """Write `n` clips, their paired and cross-paired references and train / val manifests under `out`.

    Layout: `videos/000000.mp4`, `references/000000.png` (paired), `references/000000_cross.png`, `train.csv`,
    `val.csv` (columns video, caption, reference, cross_reference, color, shape, direction, start/end centre),
    `synth.json`. Deterministic in `seed`; subjects x directions cycle in a seeded order. Clips whose subject
    (colour, shape) is in `holdout_subjects` go only to validation; of the rest a seeded `val_fraction` too.
    """
    check_vocabulary(colors, shapes, directions)
    subjects = list(itertools.product(colors, shapes))
    holdout = [tuple(subject) for subject in holdout_subjects]
    unknown = [subject for subject in holdout if subject not in subjects]
    if unknown:
        raise ValueError(f"holdout_subjects {unknown} are not (color, shape) pairs of this set {subjects}")
    if len(holdout) >= len(subjects):
        raise ValueError("holdout_subjects must leave at least one subject for training")
    if n < 1 or num_frames < 2:
        raise ValueError(f"need n >= 1 clips of num_frames >= 2 frames, got n={n}, num_frames={num_frames}")
    height, width = _as_size(size)
    if height != width:
        raise ValueError(f"size must be square (references are square stills), got {size}")
    shape_size = tuple(float(v) for v in shape_size)
    cross_low, cross_high = (float(v) for v in cross_shape_size)

    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "references").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(subjects, directions))
    order: list = []
    while len(order) < n:
        order.extend(combos[i] for i in rng.permutation(len(combos)))

    rows, splits = [], []
    for index, ((color, shape), direction) in enumerate(order[:n]):
        spec = _clip_spec(
            color, shape, direction, (height, width), num_frames, travel, rng, shape_size, texture_contrast
        )
        video = f"videos/{index:06d}.mp4"
        write_video(out / video, render_clip(spec), fps=fps, crf=crf)
        paired = f"references/{index:06d}.png"
        write_image(out / paired, render_reference(color, shape, width, spec.radius, spec.start))
        radius = float(rng.uniform(cross_low, cross_high) * width)
        margin = radius * 1.35 + 1
        centre = (float(rng.uniform(margin, width - margin)), float(rng.uniform(margin, width - margin)))
        cross = f"references/{index:06d}_cross.png"
        write_image(out / cross, render_reference(color, shape, width, radius, centre))
        row = _row(video, spec, fps)
        row.caption = subject_caption(direction)
        row.extra.update({"reference": paired, "cross_reference": cross})
        rows.append(row)
        splits.append("val" if (color, shape) in holdout else "")
    free = [i for i, split in enumerate(splits) if not split]
    num_val = round(val_fraction * len(free))
    picks = set(rng.choice(free, size=num_val, replace=False).tolist()) if num_val else set()
    splits = [split or ("val" if i in picks else "train") for i, split in enumerate(splits)]

    columns = ["video", "caption", "reference", "cross_reference", "num_frames", "height", "width", "fps"]
    columns += ["color", "shape", "direction", "start_x", "start_y", "end_x", "end_y"]
    train = [row for row, split in zip(rows, splits, strict=True) if split == "train"]
    val = [row for row, split in zip(rows, splits, strict=True) if split == "val"]
    write_manifest(out / "train.csv", train, columns)
    write_manifest(out / "val.csv", val, columns)
    settings = {
        "kind": "personalization",
        "n": n,
        "seed": seed,
        "size": width,
        "num_frames": num_frames,
        "fps": fps,
        "colors": list(colors),
        "shapes": list(shapes),
        "directions": list(directions),
        "holdout_subjects": [list(subject) for subject in holdout],
        "val_fraction": val_fraction,
        "travel": travel,
        "shape_size": list(shape_size),
        "cross_shape_size": [cross_low, cross_high],
        "texture_contrast": texture_contrast,
        "crf": crf,
    }
    write_text(out / "synth.json", json.dumps(settings, indent=2) + "\n")
    return PersonalizationDataset(out, out / "train.csv", out / "val.csv", len(train), len(val), holdout)
