"""`mg-train backtranslate`: Movie Gen Edit's stage-III data. The stage-II model edits real clips with a
forward instruction; the pairs are written reversed, so training denoises the clean clip conditioned on the
edited one and the backward instruction, and every target is a real video.

The forward instructions come from each clip's ground truth (manifest columns `color` and `shape`, as mg-data's
synthetic sets write them; an LLM writes them for real videos in the paper): recolor ("make the red circle
blue" -> backward "make the blue circle red") and mark ("paint the circle magenta" -> backward "make the magenta
circle red", a recolor). Output: `sources/N.mp4` (the model's edits), `targets/N.mp4` (the clips, copied),
`train.csv` (video = target, source, caption = backward instruction, instruction, task, forward_instruction,
forward_task) and `all.csv` (every file once, for the latent and text caches: a target with the backward
instruction training reads for it, as mg-data's editing sets list theirs).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from mg_data import load_manifest, read_video, write_manifest, write_video
from mg_data.atomic import write_text
from mg_data.editing import MARK_COLOR
from mg_data.manifest import ManifestRow
from mg_data.synth import DEFAULT_COLORS
from mg_train.config.loader import ConfigError
from mg_train.config.schema import BacktranslateConfig
from mg_train.pipeline import MovieGenPipeline, RequestError

BACKTRANSLATION_TASKS = ("recolor", "mark")


def forward_edit(task: str, color: str, shape: str, rng: np.random.Generator) -> tuple[str, str, str]:
    """(forward instruction, backward instruction, backward task) for a clip of a `color` `shape`."""
    if task == "recolor":
        new = str(rng.choice([c for c in DEFAULT_COLORS if c != color]))
        return f"make the {color} {shape} {new}", f"make the {new} {shape} {color}", "recolor"
    if task == "mark":
        return f"paint the {shape} {MARK_COLOR}", f"make the {MARK_COLOR} {shape} {color}", "recolor"
    raise ValueError(f"backtranslation tasks are {BACKTRANSLATION_TASKS}, got {task!r}")


def run(cfg: BacktranslateConfig) -> Path:
    cfg.check()
    unknown = [t for t in cfg.tasks if t not in BACKTRANSLATION_TASKS]
    if unknown:
        raise ConfigError(
            f"tasks={cfg.tasks}: {unknown} cannot be reversed; use {list(BACKTRANSLATION_TASKS)}"
        )
    manifest = load_manifest(cfg.manifest, cfg.root)
    missing = [c for c in ("color", "shape") if c not in manifest.columns]
    if missing:
        raise ConfigError(
            f"manifest={cfg.manifest}: needs the ground-truth columns {missing} for its instructions"
        )
    pipe = MovieGenPipeline.from_pretrained(cfg.checkpoint, jit=cfg.jit)
    if not pipe.takes_video:
        raise RequestError(f"checkpoint={cfg.checkpoint}: not a Movie Gen Edit pipeline (the stage-II model)")
    absent = [t for t in cfg.tasks if t not in pipe.editor.tasks]
    if absent:
        raise ConfigError(
            f"tasks={cfg.tasks}: the model does not know {absent} (it knows {list(pipe.editor.tasks)})"
        )
    out = Path(cfg.output_dir)
    for folder in ("sources", "targets"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rows = [row for row in manifest.rows if not row.is_image][: cfg.limit]
    rng = np.random.default_rng(cfg.seed)
    written, media = [], []
    for index, row in enumerate(rows):
        clip = read_video(manifest.abspath(row))[: pipe.info.frames]
        task = cfg.tasks[index % len(cfg.tasks)]
        color, shape = row.extra["color"], row.extra["shape"]
        forward, backward, backward_task = forward_edit(task, color, shape, rng)
        edited = pipe.edit(
            clip, forward, task, steps=cfg.steps, cfg_scale=cfg.cfg_scale, seed=cfg.seed + index
        )
        source, target = f"sources/{index:06d}.mp4", f"targets/{index:06d}.mp4"
        fps = row.fps or pipe.info.fps
        write_video(out / source, edited, fps=fps)
        if clip.shape[0] == (row.num_frames or clip.shape[0]):
            shutil.copy2(manifest.abspath(row), out / target)
        else:
            write_video(out / target, clip, fps=fps)
        written.append(
            ManifestRow(
                video=target,
                caption=backward,
                num_frames=clip.shape[0],
                height=clip.shape[1],
                width=clip.shape[2],
                fps=fps,
                extra={
                    "source": source,
                    "instruction": backward,
                    "task": backward_task,
                    "forward_instruction": forward,
                    "forward_task": task,
                    "color": color,
                    "shape": shape,
                },
            )
        )
        media += [  # each file with the caption training reads for it (text caches are keyed by file)
            ManifestRow(video=source, caption=forward, num_frames=clip.shape[0], fps=fps),
            ManifestRow(video=target, caption=backward, num_frames=clip.shape[0], fps=fps),
        ]
        print(
            f"backtranslate {index + 1}/{len(rows)}: {forward!r} -> {backward!r}", file=sys.stderr, flush=True
        )
    columns = ["video", "source", "caption", "instruction", "task", "forward_instruction", "forward_task"]
    write_manifest(
        out / "train.csv", written, [*columns, "num_frames", "height", "width", "fps", "color", "shape"]
    )
    write_manifest(out / "all.csv", media, ["video", "caption", "num_frames", "fps"])
    settings = {k: getattr(cfg, k) for k in ("checkpoint", "manifest", "tasks", "steps", "cfg_scale", "seed")}
    write_text(out / "backtranslate.json", json.dumps({**settings, "pairs": len(written)}, indent=1))
    return out
