"""`mg-train sample`: prompts (or a prompts file) -> mp4 videos or png images with a trained pipeline."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from mg_data import is_image_path, read_image, read_video, write_image, write_video
from mg_data.atomic import write_text
from mg_data.video_io import probe
from mg_train.config.schema import EditCommandConfig, SampleConfig
from mg_train.pipeline import MovieGenPipeline, RequestError, save_media, slugify


def read_prompts(cfg: SampleConfig) -> list[str]:
    """cfg.prompts plus the prompts file: one prompt per line, or a CSV's `caption` (or `prompt`) column."""
    prompts = list(cfg.prompts)
    if cfg.prompts_file:
        path = Path(cfg.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts_file {path} does not exist")
        if path.suffix.lower() == ".csv":
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                column = next((c for c in ("caption", "prompt") if c in (reader.fieldnames or [])), None)
                if column is None:
                    raise ValueError(f"{path}: a CSV prompts file needs a 'caption' or 'prompt' column")
                prompts += [row[column].strip() for row in reader if row[column].strip()]
        else:
            prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompts: pass --prompts or --prompts_file")
    return prompts


def read_reference(cfg: SampleConfig):
    """The reference image of `--reference` as uint8 RGB (H, W, 3), or None."""
    if cfg.reference is None:
        return None
    path = Path(cfg.reference)
    if not path.is_file():
        raise FileNotFoundError(f"reference {path} does not exist (an image of the subject: png or jpg)")
    return read_image(path)[0]  # (1, H, W, 3) -> (H, W, 3)


def run(cfg: SampleConfig) -> list[Path]:
    prompts = read_prompts(cfg)
    reference = read_reference(cfg)
    pipe = MovieGenPipeline.from_pretrained(cfg.checkpoint)
    frames, size = pipe.check_request(cfg.frames, cfg.size)  # refuse before any work
    if reference is not None and not pipe.takes_reference:
        raise RequestError(
            f"--reference: {cfg.checkpoint} is a text-to-video pipeline (no vision encoder); reference images need "
            "a personalised (PT2V) pipeline"
        )
    fps = cfg.fps or pipe.info.fps
    out_dir = Path(cfg.output_dir)
    written: list[Path] = []
    records = []
    for start in range(0, len(prompts), cfg.batch_size):
        batch = prompts[start : start + cfg.batch_size]

        label = f"prompts {start + 1}-{start + len(batch)} of {len(prompts)}"

        def progress(stage: str, done: int, total: int, label: str = label) -> None:
            if stage == "denoise" and (done == total or done % 10 == 0):
                print(f"  {label}: step {done}/{total}", file=sys.stderr)

        videos = pipe.generate(
            batch,
            negative_prompt=cfg.negative_prompt,
            num_frames=frames,
            size=size,
            steps=cfg.steps,
            cfg_scale=cfg.cfg_scale,
            seed=cfg.seed + start,
            progress=progress,
            reference=reference,
        )
        stems = [f"{start + i:04d}-{slugify(p)}" for i, p in enumerate(batch)]
        paths = save_media(videos, out_dir, stems, fps)
        for i, (prompt, path) in enumerate(zip(batch, paths, strict=True)):
            records.append({"prompt": prompt, "file": path.name, "seed": cfg.seed + start + i})
            print(f"wrote {path}")
        written += paths
    settings = {
        "checkpoint": str(cfg.checkpoint),
        "steps": cfg.steps,
        "cfg_scale": cfg.cfg_scale,
        "negative_prompt": cfg.negative_prompt,
        "frames": frames,
        "size": list(size),
        "fps": fps,
        "reference": cfg.reference,
        "samples": records,
    }
    write_text(out_dir / "samples.json", json.dumps(settings, indent=1))
    return written


def edit(cfg: EditCommandConfig) -> Path:
    """`mg-train edit`: the input video changed as instructed, written to `cfg.output` with an `.json` record."""
    source = Path(cfg.video)
    if not source.is_file():
        raise FileNotFoundError(f"video {source} does not exist")
    frames = read_image(source) if is_image_path(source) else read_video(source)
    pipe = MovieGenPipeline.from_pretrained(cfg.checkpoint)
    if not pipe.takes_video:
        raise RequestError(f"{cfg.checkpoint} is not a Movie Gen Edit pipeline (no task embeddings)")

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "denoise" and (done == total or done % 10 == 0):
            print(f"  edit: step {done}/{total}", file=sys.stderr)

    edited = pipe.edit(
        frames,
        cfg.instruction,
        cfg.task,
        steps=cfg.steps,
        cfg_scale=cfg.cfg_scale,
        seed=cfg.seed,
        progress=progress,
    )
    out = Path(cfg.output)
    fps = cfg.fps or (probe(source).fps if not is_image_path(source) else pipe.info.fps) or pipe.info.fps
    if edited.shape[0] == 1:
        write_image(out, edited[0])
    else:
        write_video(out, edited, fps=fps)
    record = {
        k: getattr(cfg, k)
        for k in ("checkpoint", "video", "instruction", "task", "steps", "cfg_scale", "seed")
    }
    write_text(out.with_suffix(".json"), json.dumps({**record, "output": out.name, "fps": fps}, indent=1))
    print(f"wrote {out}")
    return out
