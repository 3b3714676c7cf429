"""The demo's work without any UI: validate a request, generate with the pipeline, write the media file.

The Gradio app (app.py) is a thin layer over `Generator`, so everything here is testable without a browser.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mg_data import read_image
from mg_demo.limits import DEFAULT_TIMEOUT, check_prompt_length
from mg_demo.outputs import DEFAULT_KEEP_HOURS, DEFAULT_MAX_OUTPUT_MB, check_output_dir, prune_outputs
from mg_train.pipeline import MovieGenPipeline, RequestError, save_media, slugify

VIDEO, IMAGE = "Video", "Image"
MODES = (VIDEO, IMAGE)
# Defaults of the quickstart's own samples (QuickstartConfig.sample_steps / cfg_scale): good on a CPU.
DEFAULT_STEPS = 30
DEFAULT_CFG = 5.0
MAX_STEPS = 200
MAX_CFG = 30.0
MAX_SEED = 2**31 - 1

# progress(fraction in [0, 1], description)
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class Request:
    """One generation as the user asked for it (already validated when it comes from `Generator.request`)."""

    prompt: str
    negative_prompt: str = ""
    mode: str = VIDEO
    frames: int = 16
    height: int = 64
    width: int = 64
    steps: int = DEFAULT_STEPS
    cfg_scale: float = DEFAULT_CFG
    seed: int = 0
    reference: str | None = None  # image file of the subject (PT2V pipelines)

    @property
    def num_frames(self) -> int:
        return 1 if self.mode == IMAGE else self.frames


@dataclass(frozen=True)
class Result:
    """A finished generation: its number in this server's run, the file written, the request and the time."""

    index: int
    path: Path
    request: Request
    seconds: float

    def settings(self) -> dict[str, Any]:
        settings = asdict(self.request)
        settings["frames"] = self.request.num_frames
        return {"index": self.index, "file": self.path.name, **settings, "seconds": round(self.seconds, 2)}

    def caption(self) -> str:
        """One line with every setting, for the gallery and the status box."""
        r = self.request
        what = "image" if r.mode == IMAGE else f"{r.frames} frames"
        parts = [
            f"#{self.index} {r.prompt!r}",
            f"{what} {r.height}x{r.width}",
            f"{r.steps} steps",
            f"CFG {r.cfg_scale:g}",
            f"seed {r.seed}",
        ]
        if r.reference:
            parts.append(f"reference {Path(r.reference).name}")
        if r.negative_prompt:
            parts.append(f"negative {r.negative_prompt!r}")
        parts.append(f"{self.seconds:.1f} s")
        return " · ".join(parts)


def read_reference(path: str | Path) -> np.ndarray:
    """A reference image as uint8 RGB (H, W, 3)."""
    return read_image(path)[0]


def random_seed() -> int:
    return random.SystemRandom().randint(0, MAX_SEED)


def _integer(name: str, value: Any) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RequestError(f"{name} is empty: enter a whole number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a whole number, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise RequestError(f"{name} must be a whole number, got {value!r}")
    return int(number)


class Generator:
    """Serves generation requests with one pipeline, one at a time, writing results under `output_dir`.

    `output_dir` may not be a home or system folder (it is served as a whole); results older than `keep_hours`
    are deleted, and the oldest ones beyond `max_output_mb`; a request running longer than `timeout` seconds
    (counted from when it was admitted, queue time included) is stopped at the next sampling step."""

    def __init__(
        self,
        pipeline: MovieGenPipeline,
        output_dir: str | Path,
        max_steps: int = MAX_STEPS,
        checkpoint: str | Path | None = None,
        keep_hours: float = DEFAULT_KEEP_HOURS,
        max_output_mb: float = DEFAULT_MAX_OUTPUT_MB,
        timeout: float = DEFAULT_TIMEOUT,
    ):
        self.pipeline = pipeline
        self.output_dir = check_output_dir(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.max_steps = max_steps
        self.keep_hours = keep_hours
        self.max_output_mb = max_output_mb
        self.timeout = timeout
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self._lock = threading.Lock()  # MindSpore work is not re-entrant: one request at a time
        self._count = 0

    @property
    def info(self):
        return self.pipeline.info

    def defaults(self) -> Request:
        """The trained frame count and size, the quickstart's sampling settings, the first example prompt."""
        height, width = self.info.size
        prompt = self.info.example_prompts[0] if self.info.example_prompts else ""
        return Request(prompt=prompt, frames=self.info.frames, height=height, width=width)

    def limits(self) -> dict[str, Any]:
        return {
            **self.pipeline.limits(),
            "max_steps": self.max_steps,
            "max_cfg": MAX_CFG,
            "max_seed": MAX_SEED,
        }

    def request(
        self,
        prompt: Any,
        negative_prompt: Any = "",
        mode: Any = VIDEO,
        frames: Any = None,
        height: Any = None,
        width: Any = None,
        steps: Any = DEFAULT_STEPS,
        cfg_scale: Any = DEFAULT_CFG,
        seed: Any = 0,
        reference: Any = None,
    ) -> Request:
        """Validate raw UI/API values into a Request; anything the model cannot do raises RequestError with a
        message meant for the user (which setting, what was given, what is allowed). `reference` is the path of
        an image of the subject, for a personalised (PT2V) pipeline."""
        check_prompt_length("prompt", prompt)
        check_prompt_length("negative prompt", negative_prompt)
        if not isinstance(prompt, str) or not prompt.strip():
            raise RequestError("type a prompt first")
        prompt = prompt.strip()
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise RequestError(f"the negative prompt must be text, got {negative_prompt!r}")
        negative_prompt = (negative_prompt or "").strip()
        if mode not in MODES:
            raise RequestError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        default_height, default_width = self.info.size
        frames = self.info.frames if frames is None and mode == VIDEO else frames
        frames = 1 if mode == IMAGE else _integer("frames", frames)
        if mode == VIDEO and frames < 2:
            raise RequestError(
                f"a video needs at least 2 frames, got {frames} (use Image mode for one frame)"
            )
        height = _integer("height", default_height if height is None else height)
        width = _integer("width", default_width if width is None else width)
        self.pipeline.check_request(frames, (height, width))  # size, frame and token (memory) limits
        steps, cfg_scale, seed = self.check_sampling(steps, cfg_scale, seed)
        reference = self._reference(reference)
        return Request(
            prompt, negative_prompt, mode, frames, height, width, steps, cfg_scale, seed, reference
        )

    def check_sampling(self, steps: Any, cfg_scale: Any, seed: Any) -> tuple[int, float, int]:
        """Steps, CFG scale and seed as numbers within this server's limits, or RequestError saying which."""
        steps = _integer("steps", steps)
        if not 2 <= steps <= self.max_steps:
            raise RequestError(f"steps must be between 2 and {self.max_steps}, got {steps}")
        try:
            cfg_scale = float(cfg_scale)
        except (TypeError, ValueError):
            raise RequestError(f"CFG scale must be a number, got {cfg_scale!r}") from None
        if not 0.0 <= cfg_scale <= MAX_CFG:  # also refuses NaN
            raise RequestError(f"CFG scale must be between 0 and {MAX_CFG:g}, got {cfg_scale!r}")
        seed = _integer("seed", seed)
        if not 0 <= seed <= MAX_SEED:
            raise RequestError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
        return steps, cfg_scale, seed

    def next_index(self) -> int:
        """The number of the next result of this server's run (results are numbered 1, 2, ...)."""
        with self._lock:
            self._count += 1
            return self._count

    @property
    def takes_video(self) -> bool:
        """Whether the pipeline edits videos (Movie Gen Edit): the app then has an editing tab."""
        return self.pipeline.takes_video

    @property
    def takes_reference(self) -> bool:
        """Whether the pipeline is personalised (PT2V): requests may carry a reference image."""
        return self.pipeline.takes_reference

    def _reference(self, reference: Any) -> str | None:
        """The reference image's path, checked readable; refused for a text-to-video pipeline."""
        if reference in (None, ""):
            return None
        if not self.takes_reference:
            raise RequestError(
                "reference image: this model is text-to-video (no vision encoder); only a personalised (PT2V) "
                "pipeline takes one"
            )
        path = reference.get("path") if isinstance(reference, dict) else reference
        try:
            read_reference(path)
        except (OSError, ValueError, TypeError) as err:
            raise RequestError(f"reference image: cannot read it as an image ({err})") from None
        return str(path)

    def frames_for(
        self, request: Request, progress: ProgressFn | None = None, admitted: float | None = None
    ) -> np.ndarray:
        """(T, H, W, 3) uint8 for a validated request: exactly `pipeline.generate` for its prompt and seed.
        `admitted` (time.monotonic() when the request joined the queue; default now) starts its time limit."""
        report = progress or (lambda fraction, desc: None)
        admitted = time.monotonic() if admitted is None else admitted

        def check_time(where: str) -> None:
            spent = time.monotonic() - admitted
            if spent > self.timeout:
                raise RequestError(
                    f"stopped {where} after {spent:.0f} s: this server allows {self.timeout:g} s per request "
                    "(queue time included); try fewer steps or frames, a smaller size, or again later"
                )

        def on_stage(stage: str, done: int, total: int) -> None:
            where = {"text": "while encoding the prompt", "decode": "while decoding"}
            check_time(where.get(stage, f"at sampling step {done}/{total}"))
            if stage == "text":
                report(0.05 * done / max(total, 1), "Encoding the prompt")
            elif stage == "denoise":
                report(0.05 + 0.85 * done / max(total, 1), f"Sampling: step {done}/{total}")
            elif stage == "decode":
                report(0.9 + 0.08 * done / max(total, 1), "Decoding with the autoencoder")

        with self._lock:
            check_time("before starting (waiting in the queue)")
            videos = self.pipeline.generate(
                [request.prompt],
                negative_prompt=request.negative_prompt or None,
                num_frames=request.num_frames,
                size=(request.height, request.width),
                steps=request.steps,
                cfg_scale=request.cfg_scale,
                seed=request.seed,
                progress=on_stage,
                reference=read_reference(request.reference) if request.reference else None,
            )
        return videos[0]

    def generate(
        self, request: Request, progress: ProgressFn | None = None, admitted: float | None = None
    ) -> Result:
        """Generate and write `<index>-<prompt>-seed<seed>.mp4` (or .png for an image) under output_dir, then
        delete results beyond the folder's age and size budget."""
        start = time.perf_counter()
        video = self.frames_for(request, progress, admitted)
        index = self.next_index()
        if progress:
            progress(0.98, "Writing the image" if request.mode == IMAGE else "Writing the video")
        stem = f"{index:04d}-{slugify(request.prompt, limit=40)}-seed{request.seed}"
        (path,) = save_media(video[None], self.output_dir, [stem], fps=self.info.fps)
        prune_outputs(self.output_dir, self.keep_hours * 3600, self.max_output_mb * 2**20, keep=path)
        if progress:
            progress(1.0, "Done")
        return Result(index, path, request, time.perf_counter() - start)
