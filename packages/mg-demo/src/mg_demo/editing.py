"""The demo's video editing (Movie Gen Edit pipelines) without any UI: validate an edit request, run
`MovieGenPipeline.edit` with the generator's lock, time limit and output folder, write the edited video."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mg_data import is_image_path, read_image, read_video
from mg_demo.generation import Generator, ProgressFn
from mg_demo.limits import check_prompt_length
from mg_demo.outputs import prune_outputs
from mg_train.pipeline import RequestError, save_media, slugify


@dataclass(frozen=True)
class EditRequest:
    """One edit as the user asked for it (validated by `check_edit`)."""

    video: str
    instruction: str
    task: str
    steps: int = 30
    cfg_scale: float = 5.0
    seed: int = 0


@dataclass(frozen=True)
class EditResult:
    index: int
    path: Path
    request: EditRequest
    seconds: float

    def settings(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "file": self.path.name,
            **asdict(self.request),
            "seconds": round(self.seconds, 2),
        }

    def caption(self) -> str:
        r = self.request
        return " · ".join(
            [
                f"#{self.index} edit {r.instruction!r}",
                f"task {r.task}",
                f"of {Path(r.video).name}",
                f"{r.steps} steps",
                f"CFG {r.cfg_scale:g}",
                f"seed {r.seed}",
                f"{self.seconds:.1f} s",
            ]
        )


def read_frames(path: str | Path) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of a video or an image file."""
    return read_image(path) if is_image_path(path) else read_video(path)


def check_edit(
    generator: Generator,
    video: Any,
    instruction: Any,
    task: Any,
    steps: Any = 30,
    cfg_scale: Any = 5.0,
    seed: Any = 0,
) -> EditRequest:
    """Validate raw UI/API values; anything the model cannot do raises RequestError with a message for the user."""
    pipeline = generator.pipeline
    if not pipeline.takes_video:
        raise RequestError(
            "editing: this model is not a Movie Gen Edit model (it cannot take an input video)"
        )
    check_prompt_length("instruction", instruction)
    if not isinstance(instruction, str) or not instruction.strip():
        raise RequestError('instruction: say what to change, e.g. "make the red circle blue"')
    tasks = list(pipeline.editor.tasks[1:])
    if task not in tasks:
        raise RequestError(f"task must be one of {', '.join(tasks)}, got {task!r}")
    path = video.get("path") if isinstance(video, dict) else video
    if not path:
        raise RequestError("video: upload the video to edit first")
    try:
        frames = read_frames(path)
    except (OSError, ValueError, RuntimeError) as err:
        raise RequestError(f"video: cannot read it ({err})") from None
    pipeline.check_request(
        frames.shape[0], frames.shape[1:3]
    )  # its length and size must be ones the model makes
    steps, cfg_scale, seed = generator.check_sampling(steps, cfg_scale, seed)
    return EditRequest(str(path), instruction.strip(), task, steps, cfg_scale, seed)


def run_edit(
    generator: Generator,
    request: EditRequest,
    progress: ProgressFn | None = None,
    admitted: float | None = None,
) -> EditResult:
    """Edit and write `<index>-edit-<instruction>-seed<seed>.mp4` under the generator's output folder (one request
    at a time, within its time limit), then prune old results."""
    start = time.perf_counter()
    admitted = time.monotonic() if admitted is None else admitted
    report = progress or (lambda fraction, desc: None)

    def on_stage(stage: str, done: int, total: int) -> None:
        spent = time.monotonic() - admitted
        if spent > generator.timeout:
            raise RequestError(
                f"stopped after {spent:.0f} s: this server allows {generator.timeout:g} s per request (queue time "
                "included); try fewer steps or again later"
            )
        if stage == "denoise":
            report(0.05 + 0.85 * done / max(total, 1), f"Editing: step {done}/{total}")

    frames = read_frames(request.video)
    with generator._lock:
        edited = generator.pipeline.edit(
            frames,
            request.instruction,
            request.task,
            steps=request.steps,
            cfg_scale=request.cfg_scale,
            seed=request.seed,
            progress=on_stage,
        )
    index = generator.next_index()
    stem = f"{index:04d}-edit-{slugify(request.instruction, limit=40)}-seed{request.seed}"
    (path,) = save_media(edited[None], generator.output_dir, [stem], fps=generator.info.fps)
    prune_outputs(
        generator.output_dir, generator.keep_hours * 3600, generator.max_output_mb * 2**20, keep=path
    )
    report(1.0, "Done")
    return EditResult(index, path, request, time.perf_counter() - start)
