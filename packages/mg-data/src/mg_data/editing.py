"""Synthetic instruction-guided editing sets for Movie Gen Edit's training stages, on mg-data's shapes world.

Every example is a pair (source, target) with an instruction, and the ground truth to check an edit by:

- recolor: "make the red circle blue": the target is the source with the shape in another colour;
- mark: "paint the square magenta": the named object painted the mark colour (the paper's instruction-guided
  segmentation target);
- remove: "remove the triangle": the target is the background alone, the same texture in every frame;
- background: "change the background to checker": the same shape and motion over the named texture's canonical
  pattern (`mg_data.synth.CANONICAL_PATTERNS`: the instruction fixes the target) in the source's brightness and
  colour cast.

Three forms, one per stage of Movie Gen Edit's recipe:

- `image`: one-frame pairs (png), the image-edit pairs of stage I;
- `animated`: an image pair with the same random camera motion (a pan and zoom of the frame) applied to source
  and target: stage II's "animated frame editing" (the shape does not move in the world, the frame does);
- `video`: clips whose shape moves; source and target are rendered from the same world, so the target is the
  exact edit of the whole clip (what stage III's backtranslation approximates for real videos, and what an
  evaluation can compare against).

Columns of train.csv / val.csv: video (the target), source, caption (the instruction: what an edit model is
told, so `cache-text` embeds it), instruction (the same), task, target_caption and source_caption (T2V
captions of both sides; all.csv lists every file with its own),
color, shape, direction, background (the source's), target_color, target_background.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mg_data.atomic import write_text
from mg_data.manifest import ManifestRow, write_manifest
from mg_data.synth import (
    BACKGROUNDS,
    COLORS,
    DEFAULT_COLORS,
    DIRECTIONS,
    SHAPES,
    ClipSpec,
    _as_size,
    _background,
    _clip_spec,
    caption_for,
    check_vocabulary,
    render_clip,
)
from mg_data.video_io import write_image, write_video

EDIT_TASKS = ("recolor", "mark", "remove", "background")
FORMS = ("image", "animated", "video")
MARK_COLOR = "magenta"


@dataclass(frozen=True)
class Edit:
    """One edit of a world `spec`: the instruction, and what the target shows."""

    task: str
    instruction: str
    target_color: str | None  # None: the shape is gone (remove)
    target_background: str


def make_edit(task: str, spec: ClipSpec, rng: np.random.Generator, colors: Sequence[str]) -> Edit:
    """A random edit of kind `task` for the world `spec` (another colour or texture than the source's)."""
    if task == "recolor":
        color = str(rng.choice([c for c in colors if c != spec.color]))
        return Edit(task, f"make the {spec.color} {spec.shape} {color}", color, spec.background)
    if task == "mark":
        return Edit(task, f"paint the {spec.shape} {MARK_COLOR}", MARK_COLOR, spec.background)
    if task == "remove":
        return Edit(task, f"remove the {spec.shape}", None, spec.background)
    if task == "background":
        background = str(rng.choice([b for b in BACKGROUNDS if b != spec.background]))
        return Edit(task, f"change the background to {background}", spec.color, background)
    raise ValueError(f"editing task must be one of {EDIT_TASKS}, got {task!r}")


def render_target(spec: ClipSpec, edit: Edit) -> np.ndarray:
    """The target frames (T, H, W, 3) uint8 of `edit` applied to the world `spec` (same texture seed, so only
    what the instruction names changes)."""
    if edit.target_color is None:
        height, width = spec.size
        rng = np.random.default_rng(spec.background_seed)
        plain = np.rint(_background(spec.background, height, width, rng, spec.texture_contrast) * 255.0)
        return np.broadcast_to(plain.astype(np.uint8), (spec.num_frames, height, width, 3)).copy()
    if edit.task == "background":  # the named kind's canonical pattern: the instruction fixes the target
        spec = dataclasses.replace(spec, background=edit.target_background, canonical_background=True)
    return render_clip(dataclasses.replace(spec, color=edit.target_color))


def camera_path(
    size: tuple[int, int], num_frames: int, rng: np.random.Generator, zoom: float = 0.25
) -> np.ndarray:
    """(T, 2, 3) affine maps from output pixels to a canvas of `size`: a zoom into a window 1 - zoom/2 .. 1 of
    the frame that pans from one random position to another (so every output pixel is inside the canvas)."""
    height, width = size
    scales = rng.uniform(1.0 - zoom, 1.0, size=2)
    maps = []
    starts, ends = rng.uniform(0.0, 1.0, size=(2, 2))
    for t in range(num_frames):
        a = t / (num_frames - 1) if num_frames > 1 else 0.0
        scale = scales[0] + a * (scales[1] - scales[0])
        where = starts + a * (ends - starts)
        ox, oy = where[0] * width * (1 - scale), where[1] * height * (1 - scale)
        maps.append([[scale, 0.0, ox], [0.0, scale, oy]])
    return np.asarray(maps, np.float64)


def apply_camera(image: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of `image` (H, W, 3) seen through the affine `maps` (bilinear)."""
    height, width = image.shape[:2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    source = image.astype(np.float64)
    frames = []
    for m in maps:
        sx = np.clip(m[0, 0] * x + m[0, 1] * y + m[0, 2] - 0.5, 0, width - 1)
        sy = np.clip(m[1, 0] * x + m[1, 1] * y + m[1, 2] - 0.5, 0, height - 1)
        x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
        x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
        fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
        top = source[y0, x0] * (1 - fx) + source[y0, x1] * fx
        bottom = source[y1, x0] * (1 - fx) + source[y1, x1] * fx
        frames.append(np.rint(top * (1 - fy) + bottom * fy))
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)


@dataclass
class EditingDataset:
    """Where `make_editing_dataset` wrote things; manifest paths are relative to `root`."""

    root: Path
    train_manifest: Path
    val_manifest: Path
    num_train: int
    num_val: int


def make_editing_dataset(
    out: str | os.PathLike,
    form: str = "video",
    n: int = 96,
    seed: int = 0,
    size: int | Sequence[int] = 64,
    num_frames: int = 16,
    fps: float = 8.0,
    tasks: Sequence[str] = EDIT_TASKS,
    colors: Sequence[str] = DEFAULT_COLORS,
    shapes: Sequence[str] = SHAPES,
    directions: Sequence[str] = tuple(DIRECTIONS),
    val_fraction: float = 0.1,
    travel: float = 0.6,
    shape_size: Sequence[float] = (0.16, 0.2),
    texture_contrast: float = 0.4,
    crf: int = 16,
) -> EditingDataset:
    """Write `n` (source, target, instruction) examples of the given `form` and train / val manifests.

    Layout: `sources/000000.mp4` (png for `image`), `targets/000000.mp4`, `train.csv`, `val.csv`, `all.csv` (every
    source and target once: for a TAE and a latent cache), `synth.json`.
    Tasks x subjects (x directions for `video`) cycle in a seeded order; a seeded `val_fraction` is held out.
    Deterministic in `seed`.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    unknown = [task for task in tasks if task not in EDIT_TASKS]
    if unknown or not tasks:
        raise ValueError(f"tasks {list(tasks)}: expected one or more of {EDIT_TASKS}")
    check_vocabulary(colors, shapes, directions)
    if MARK_COLOR in colors and "mark" in tasks:
        raise ValueError(
            f"the mark colour {MARK_COLOR!r} must not be a subject colour: remove it from colors"
        )
    if len(colors) < 2 and "recolor" in tasks:
        raise ValueError("recolor needs at least two colours")
    frames = 1 if form == "image" else int(num_frames)
    if n < 1 or (form != "image" and frames < 2):
        raise ValueError(
            f"need n >= 1 examples of num_frames >= 2 frames, got n={n}, num_frames={num_frames}"
        )
    height, width = _as_size(size)
    out = Path(out)
    for folder in ("sources", "targets"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    moving = [None] if form != "video" else list(directions)
    combos = [(t, c, s, d) for t in tasks for c in colors for s in shapes for d in moving]
    order: list = []
    while len(order) < n:
        order.extend(combos[i] for i in rng.permutation(len(combos)))
    ext = "png" if form == "image" else "mp4"
    rows = []
    for index, (task, color, shape, direction) in enumerate(order[:n]):
        spec = _clip_spec(
            color, shape, direction, (height, width), frames, travel, rng, tuple(shape_size), texture_contrast
        )
        edit = make_edit(task, spec, rng, colors)
        source, target = render_clip(spec), render_target(spec, edit)
        if form == "animated":
            maps = camera_path((height, width), frames, rng)
            source, target = apply_camera(source[0], maps), apply_camera(target[0], maps)
        names = (f"sources/{index:06d}.{ext}", f"targets/{index:06d}.{ext}")
        for name, clip in zip(names, (source, target), strict=True):
            if form == "image":
                write_image(out / name, clip[0])
            else:
                write_video(out / name, clip, fps=fps, crf=crf)
        target_caption = (
            f"{edit.target_background} background"
            if edit.target_color is None
            else caption_for(edit.target_color, shape, direction)
        )
        rows.append(
            ManifestRow(
                video=names[1],
                caption=edit.instruction,
                num_frames=frames,
                height=height,
                width=width,
                fps=None if form == "image" else float(fps),
                extra={
                    "source": names[0],
                    "instruction": edit.instruction,
                    "task": task,
                    "target_caption": target_caption,
                    "source_caption": caption_for(color, shape, direction),
                    "color": color,
                    "shape": shape,
                    "direction": direction or "none",
                    "background": spec.background,
                    "target_color": edit.target_color or "",
                    "target_background": edit.target_background,
                },
            )
        )
    num_val = round(val_fraction * n)
    val = set(rng.choice(n, size=num_val, replace=False).tolist()) if num_val else set()
    columns = ["video", "source", "caption", "instruction", "task", "target_caption", "source_caption"]
    columns += ["num_frames", "height", "width", "fps"]
    columns += ["color", "shape", "direction", "background", "target_color", "target_background"]
    train_rows = [row for i, row in enumerate(rows) if i not in val]
    val_rows = [row for i, row in enumerate(rows) if i in val]
    write_manifest(out / "train.csv", train_rows, columns)
    write_manifest(out / "val.csv", val_rows, columns)
    media = [  # every file once, for a TAE's training and a latent cache (an edit reads both sides' latents)
        ManifestRow(video=name, caption=caption, num_frames=frames, height=height, width=width, fps=row.fps)
        for row in rows
        for name, caption in ((row.extra["source"], row.extra["source_caption"]), (row.video, row.caption))
    ]
    write_manifest(out / "all.csv", media, ["video", "caption", "num_frames", "height", "width", "fps"])
    settings = {
        "kind": "editing",
        "form": form,
        "n": n,
        "seed": seed,
        "size": [height, width],
        "num_frames": frames,
        "fps": fps,
        "tasks": list(tasks),
        "colors": list(colors),
        "shapes": list(shapes),
        "directions": list(directions),
        "val_fraction": val_fraction,
        "travel": travel,
        "shape_size": list(shape_size),
        "texture_contrast": texture_contrast,
        "crf": crf,
    }
    write_text(out / "synth.json", json.dumps(settings, indent=2) + "\n")
    return EditingDataset(out, out / "train.csv", out / "val.csv", len(train_rows), len(val_rows))


__all__ = ["COLORS", "EDIT_TASKS", "FORMS", "MARK_COLOR", "Edit", "EditingDataset", "make_editing_dataset"]
