"""Text-to-video / text-to-image sampling: text encoders -> transformer (rectified-flow Euler with CFG) -> TAE.

A pipeline folder holds everything needed to sample, written by `MovieGenPipeline.save_pretrained` at the end
of a transformer run (`<run>/pipeline/`):

    pipeline.json    sizes, frame rate, text-encoder spec, example prompts, limits
    transformer/     MovieGenTransformer.save_pretrained
    tae/             TemporalAutoencoder.save_pretrained
    text_encoders/   optional: small text encoders the spec refers to by relative path (`bundle_text_encoders`)
    vision/, reference_projection.safetensors
                     a personalised (PT2V) pipeline only: with `transformer/` they form the PT2V folder
                     (`PersonalizedTransformer.from_pretrained`); `generate(..., reference=images)`
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np

from mg_data import write_image, write_video
from mg_data.atomic import atomic_dir, write_text
from mg_tae import TemporalAutoencoder
from mg_transformer import MovieGenTransformer, sample
from mg_transformer.editing import INFO_FILE as EDIT_INFO_FILE
from mg_transformer.editing import NO_TASK, EditTransformer, is_edit_folder, write_edit_parts
from mg_transformer.editing import TASK_FILE as EDIT_TASK_FILE
from mg_transformer.personalized import (
    PROJECTION_FILE,
    VISION_DIR,
    PersonalizedTransformer,
    is_personalized_folder,
    write_reference_parts,
)
from mg_transformer.text import TextEmbedder
from mg_transformer.vision import preprocess

PIPELINE_FILE = "pipeline.json"
TEXT_ENCODERS_DIR = "text_encoders"  # bundled text encoders (`bundle_text_encoders`)
FOLDER_ENTRIES = (
    "transformer",
    "tae",
    PIPELINE_FILE,
    TEXT_ENCODERS_DIR,
    VISION_DIR,
    PROJECTION_FILE,
    EDIT_TASK_FILE,
    EDIT_INFO_FILE,
)
FORMAT = "mg-pipeline"

# progress(stage, done, total) with stage "text", "denoise" or "decode".
Progress = Callable[[str, int, int], None]


class RequestError(ValueError):
    """A generation request the pipeline cannot serve (size, frame count, prompts); the message says why."""


@dataclass
class PipelineInfo:
    """What a pipeline was trained for and what it accepts."""

    fps: float
    frames: int
    size: tuple[int, int]
    text: dict[str, Any]
    example_prompts: list[str] = field(default_factory=list)
    max_tokens: int = 8192
    format: str = FORMAT
    version: int = 1

    @classmethod
    def load(cls, path: Path) -> PipelineInfo:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: not an mg pipeline file (format {data.get('format')!r})")
        data["size"] = tuple(data["size"])
        return cls(**data)


def text_embedder_from_spec(spec: dict[str, Any], base: Path | None = None) -> TextEmbedder:
    """Rebuild the text encoders recorded in pipeline.json (`encoders`: name -> folder or preset). A relative
    folder is looked up in the pipeline folder `base` first (encoders bundled by `bundle_text_encoders`)."""
    encoders = {}
    for name, source in spec["encoders"].items():
        inside = base / source if base is not None and not Path(source).is_absolute() else None
        encoders[name] = str(inside) if inside is not None and inside.is_dir() else source
    return TextEmbedder(encoders, seed=spec.get("seed", 0), max_lengths=spec.get("max_lengths") or None)


def write_pipeline_folder(
    path: str | os.PathLike,
    transformer_dir: str | os.PathLike,
    tae: TemporalAutoencoder,
    info: PipelineInfo,
    extra: Sequence[str | os.PathLike] = (),
) -> Path:
    """A pipeline folder from an exported transformer folder (its files copied, not loaded: a large model is
    never built in memory), a TAE and the pipeline's info; the folder replaces an older one in one step. The text
    encoders are only named (`info.text`): `MovieGenPipeline.from_pretrained` loads and checks them. `extra`
    files and folders are copied in too (a PT2V model's vision/ and projection, an edit model's task files)."""
    path = Path(path)
    with atomic_dir(path, replaces=FOLDER_ENTRIES) as tmp:
        shutil.copytree(transformer_dir, tmp / "transformer")
        for item in map(Path, extra):
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        tae.save_pretrained(tmp / "tae")
        data = asdict(info)
        data["size"] = list(info.size)
        (tmp / PIPELINE_FILE).write_text(json.dumps(data, indent=1))
    return path


def bundle_text_encoders(path: str | os.PathLike) -> list[str]:
    """Copy the text-encoder folders a pipeline refers to into `<pipeline>/text_encoders/<name>` and point
    pipeline.json at them, so the folder samples wherever it is moved. Meant for small encoders (the quickstart's
    tiny ones); presets stay as they are. Returns the names of the encoders copied."""
    folder = resolve_pipeline_dir(path)
    info_path = folder / PIPELINE_FILE
    info = json.loads(info_path.read_text())
    copied = []
    for name, source in info["text"]["encoders"].items():
        source_dir = Path(source) if Path(source).is_absolute() else folder / source
        target = Path(TEXT_ENCODERS_DIR) / name
        if not source_dir.is_dir() or source_dir.resolve() == (folder / target).resolve():
            continue
        with atomic_dir(folder / target) as tmp:
            shutil.copytree(source_dir, tmp, dirs_exist_ok=True)
        info["text"]["encoders"][name] = target.as_posix()
        copied.append(name)
    write_text(info_path, json.dumps(info, indent=1))
    return copied


class MovieGenPipeline:
    """Generate videos (or images, 1 frame) from prompts with a trained transformer, TAE and text encoders."""

    def __init__(
        self,
        transformer: MovieGenTransformer | PersonalizedTransformer | EditTransformer,
        tae: TemporalAutoencoder,
        text: TextEmbedder,
        info: PipelineInfo,
        jit: bool = True,
    ):
        """`transformer` may be a PersonalizedTransformer (PT2V: `generate` then takes reference images) or an
        EditTransformer (Movie Gen Edit: `edit` changes a video as instructed; `generate` is its T2V mode)."""
        self.personalized = transformer if isinstance(transformer, PersonalizedTransformer) else None
        self.editor = transformer if isinstance(transformer, EditTransformer) else None
        wrapper = self.personalized or self.editor
        if wrapper is not None:
            transformer = wrapper.transformer
            wrapper.set_train(False)
        self.transformer, self.tae, self.text, self.info = transformer, tae, text, info
        order = tuple(transformer.config.text_encoders)
        if tuple(text.names) != order:
            raise ValueError(f"text encoders {text.names} do not match the transformer's {order}")
        for name, dim in transformer.config.text_dims.items():
            if text.dims[name] != dim:
                raise ValueError(
                    f"text encoder {name} gives {text.dims[name]}-d embeddings, the model expects {dim}"
                )
        self.transformer.set_train(False)
        self.tae.set_train(False)
        self._velocity = ms.jit(self._forward) if jit else self._forward
        self._personal_velocity = ms.jit(self._personal_forward) if jit else self._personal_forward
        self._edit_velocity = ms.jit(self._edit_forward) if jit else self._edit_forward

    def _forward(self, x, t, text_embs, text_masks):
        return self.transformer(x, t, text_embs, text_masks)

    def _personal_forward(self, x, t, text_embs, text_masks, pixels, keep):
        return self.personalized(x, t, text_embs, text_masks, pixels, keep)

    def _edit_forward(self, x, t, text_embs, text_masks, condition, task):
        return self.editor(x, t, text_embs, text_masks, condition, task)

    # -- persistence ---------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, jit: bool = True) -> MovieGenPipeline:
        """Load from a pipeline folder, or from a run directory that contains `pipeline/`."""
        folder = resolve_pipeline_dir(path)
        info = PipelineInfo.load(folder / PIPELINE_FILE)
        if is_personalized_folder(folder):
            transformer = PersonalizedTransformer.from_pretrained(folder)
        elif is_edit_folder(folder):
            transformer = EditTransformer.from_pretrained(folder)
        else:
            transformer = MovieGenTransformer.from_pretrained(folder / "transformer")
        tae = TemporalAutoencoder.from_pretrained(folder / "tae")
        return cls(transformer, tae, text_embedder_from_spec(info.text, folder), info, jit=jit)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the pipeline folder; it replaces an existing pipeline folder in one step once complete (and
        refuses a folder that holds anything else)."""
        path = Path(path)
        with atomic_dir(path, replaces=FOLDER_ENTRIES) as tmp:
            self.transformer.save_pretrained(tmp / "transformer")
            if self.editor is not None:
                tensors = {key: p.asnumpy() for key, p in self.editor.task_parameters().items()}
                write_edit_parts(tmp, self.editor.tasks, self.editor.task_tokens, tensors)
            if self.personalized is not None:
                projection = self.personalized.reference_projection.parameters_and_names()
                write_reference_parts(
                    tmp, self.personalized.vision, {name: p.asnumpy() for name, p in projection}
                )
            self.tae.save_pretrained(tmp / "tae")
            info = asdict(self.info)
            info["size"] = list(self.info.size)
            (tmp / PIPELINE_FILE).write_text(json.dumps(info, indent=1))
        return path

    # -- requests ------------------------------------------------------------------------------------------------

    def limits(self) -> dict[str, Any]:
        """The largest frame count and size the position tables and `max_tokens` allow (for UIs); sizes are
        multiples of the TAE's spatial compression times the transformer's patch (8 x 2 = 16 for Movie Gen)."""
        pt, ph, pw = self.transformer.config.pos_embed_max_size
        patch_t, patch_h, patch_w = self.transformer.config.patch_size
        t, s = self.tae.config.temporal_compression, self.tae.config.spatial_compression
        return {
            "max_frames": pt * patch_t * t,
            "max_height": ph * patch_h * s,
            "max_width": pw * patch_w * s,
            "multiple": math.lcm(s * patch_h, s * patch_w),
            "max_tokens": self.info.max_tokens,
        }

    def check_request(
        self, num_frames: int | None, size: Sequence[int] | None
    ) -> tuple[int, tuple[int, int]]:
        """Resolve defaults and refuse what the model cannot generate, with a message that says why."""
        frames = self.info.frames if num_frames is None else int(num_frames)
        height, width = self.info.size if size is None else (int(size[0]), int(size[1]))
        lim = self.limits()
        if frames < 1:
            raise RequestError(f"frames must be at least 1 (1 = an image), got {frames}")
        if frames > lim["max_frames"]:
            raise RequestError(
                f"{frames} frames is more than this model's position table covers ({lim['max_frames']} frames)"
            )
        multiple = lim["multiple"]
        for name, value, top in (("height", height, lim["max_height"]), ("width", width, lim["max_width"])):
            if value < multiple or value % multiple:
                raise RequestError(f"{name} must be a positive multiple of {multiple}, got {value}")
            if value > top:
                raise RequestError(f"{name} {value} exceeds this model's position table ({top} pixels)")
        tokens = self.num_tokens(frames, (height, width))
        if tokens > self.info.max_tokens:
            raise RequestError(
                f"{frames} frames at {height}x{width} is {tokens} tokens, more than this pipeline's limit of "
                f"{self.info.max_tokens} (memory); use fewer frames or a smaller size"
            )
        return frames, (height, width)

    def num_tokens(self, frames: int, size: Sequence[int]) -> int:
        """Transformer tokens of a video: its latent grid (from the TAE) in patches."""
        _, t_lat, h_lat, w_lat = self.tae.latent_shape(frames, *size)
        return self.transformer.config.num_patches((t_lat, h_lat, w_lat))

    @property
    def takes_reference(self) -> bool:
        """Whether `generate` accepts a reference image (a PT2V pipeline)."""
        return self.personalized is not None

    def _reference_velocity(self, reference: np.ndarray, batch: int) -> Callable:
        """The sampler's velocity for PT2V: the reference on the conditional half of the batch, masked on the
        unconditional half (the sampler stacks [conditional; unconditional] when guiding)."""
        if self.personalized is None:
            raise RequestError(
                "this pipeline has no vision encoder (a text-to-video model): a reference image needs a PT2V "
                "pipeline (trained with reference.vision)"
            )
        images = np.asarray(reference)
        if images.ndim == 3:
            images = np.broadcast_to(images, (batch, *images.shape))
        if images.ndim != 4 or images.shape[0] != batch or images.shape[-1] != 3:
            raise RequestError(
                f"reference must be one RGB image (H, W, 3) or one per prompt ({batch}, H, W, 3), got shape "
                f"{images.shape}"
            )
        pixels = ms.Tensor(preprocess(images, self.personalized.vision.config.image_size))

        def velocity(x, t, text_embs, text_masks):
            rows = x.shape[0]
            keep = np.arange(rows) < batch  # rows past the batch are the unconditional half
            both = pixels if rows == batch else ms.ops.concat([pixels, pixels], 0)
            return self._personal_velocity(
                x, t, text_embs, text_masks, both, ms.Tensor(keep.astype(np.float32))
            )

        return velocity

    # -- generation ----------------------------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[str],
        *,
        negative_prompt: str | None = None,
        num_frames: int | None = None,
        size: Sequence[int] | None = None,
        steps: int = 50,
        cfg_scale: float = 7.5,
        seed: int = 0,
        progress: Progress | None = None,
        reference: np.ndarray | None = None,
    ) -> np.ndarray:
        """uint8 frames (B, T, H, W, 3) for `prompts`; prompt i starts from the noise of seed + i, so a
        (prompt, seed) pair gives the same result whatever else is in the batch.

        `reference` (PT2V pipelines): uint8 RGB image(s), (H, W, 3) for every prompt or (B, H, W, 3) one per
        prompt; the subject to show. Guidance contrasts (prompt, reference) with (empty prompt, no reference);
        without a reference a PT2V pipeline is its T2V model."""
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise RequestError("no prompts given")
        frames, (height, width) = self.check_request(num_frames, size)
        if steps < 2:
            raise RequestError(f"steps must be at least 2, got {steps}")
        if reference is not None:
            velocity = self._reference_velocity(reference, len(prompts))
        elif self.editor is not None:  # Edit's T2V mode: a black video as the input, no task
            black = np.full((1, 3, frames, height, width), -1.0, np.float32)
            velocity = self._conditioned_velocity(self._condition_of(black), NO_TASK, len(prompts))
        else:
            velocity = self._velocity
        report = progress or (lambda stage, done, total: None)
        names = tuple(self.transformer.config.text_encoders)
        report("text", 0, 1)
        cond = self.text.embed(prompts)
        null = self.text.embed_null()
        negative = self.text.embed([negative_prompt]) if negative_prompt else None
        report("text", 1, 1)
        channels = self.transformer.config.out_channels
        shape = (channels, *self.tae.latent_shape(frames, height, width)[1:])
        noise = np.stack(
            [np.random.default_rng(seed + i).standard_normal(shape) for i in range(len(prompts))]
        )

        def tensors(embedded, key):
            return tuple(ms.Tensor(embedded[n][key]) for n in names)

        latents = sample(
            velocity,
            (len(prompts), *shape),
            tensors(cond, 0),
            tensors(cond, 1),
            null_text_embs=tensors(null, 0),
            null_text_masks=tensors(null, 1),
            negative_text_embs=tensors(negative, 0) if negative else None,
            negative_text_masks=tensors(negative, 1) if negative else None,
            guidance_scale=cfg_scale,
            num_steps=steps,
            noise=noise.astype(np.float32),
            progress=lambda step, total, t: report("denoise", step, total),
        )
        videos = []
        for i in range(len(prompts)):
            report("decode", i, len(prompts))
            pixels = self.tae.decode(self.tae.unscale_latents(latents[i : i + 1]), num_frames=frames)
            videos.append(to_uint8(pixels.asnumpy()[0]))
        report("decode", len(prompts), len(prompts))
        return np.stack(videos)

    # -- editing (Movie Gen Edit pipelines) ----------------------------------------------------------------------

    @property
    def takes_video(self) -> bool:
        """Whether `edit` works: an Edit pipeline (its tasks: `editor.tasks`)."""
        return self.editor is not None

    def _condition_of(self, pixels: np.ndarray) -> ms.Tensor:
        """Scaled latents (posterior mean) of (1, 3, T, H, W) pixels in [-1, 1]: an edit's input video."""
        posterior = self.tae.encode(ms.Tensor(pixels.astype(np.float32)))
        return self.tae.scale_latents(posterior.mean)

    def _conditioned_velocity(self, condition: ms.Tensor, task: str, batch: int) -> Callable:
        """The sampler's velocity for Edit: every row (conditional and unconditional halves) sees the input
        video and the task; guidance contrasts the instruction with the empty one."""
        index = self.editor.task_index(task)

        def velocity(x, t, text_embs, text_masks):
            rows = x.shape[0]
            repeated = ms.ops.broadcast_to(condition, (rows, *condition.shape[1:]))
            tasks = ms.Tensor(np.full(rows, index, np.int32))
            return self._edit_velocity(x, t, text_embs, text_masks, repeated, tasks)

        return velocity

    def edit(
        self,
        video: np.ndarray,
        instruction: str,
        task: str,
        *,
        steps: int = 50,
        cfg_scale: float = 7.5,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """uint8 frames (T, H, W, 3) of `video` ((T, H, W, 3) uint8, a size and length this model can make)
        changed as `instruction` says; `task` is one of the model's editing tasks (`editor.tasks`)."""
        if self.editor is None:
            raise RequestError("this pipeline cannot edit videos (not a Movie Gen Edit model)")
        if task not in self.editor.tasks:
            raise RequestError(f"task must be one of {list(self.editor.tasks)}, got {task!r}")
        video = np.asarray(video)
        if video.ndim != 4 or video.shape[-1] != 3:
            raise RequestError(
                f"the input video must be (frames, height, width, 3) RGB, got shape {video.shape}"
            )
        frames, height, width = video.shape[:3]
        self.check_request(frames, (height, width))
        if steps < 2:
            raise RequestError(f"steps must be at least 2, got {steps}")
        report = progress or (lambda stage, done, total: None)
        pixels = video.astype(np.float32).transpose(3, 0, 1, 2)[None] / 127.5 - 1.0
        condition = self._condition_of(pixels)
        names = tuple(self.transformer.config.text_encoders)
        report("text", 0, 1)
        cond, null = self.text.embed([instruction]), self.text.embed_null()
        report("text", 1, 1)
        noise = np.random.default_rng(seed).standard_normal(tuple(condition.shape)).astype(np.float32)
        latents = sample(
            self._conditioned_velocity(condition, task, 1),
            tuple(condition.shape),
            tuple(ms.Tensor(cond[n][0]) for n in names),
            tuple(ms.Tensor(cond[n][1]) for n in names),
            null_text_embs=tuple(ms.Tensor(null[n][0]) for n in names),
            null_text_masks=tuple(ms.Tensor(null[n][1]) for n in names),
            guidance_scale=cfg_scale,
            num_steps=steps,
            noise=noise,
            progress=lambda step, total, t: report("denoise", step, total),
        )
        report("decode", 0, 1)
        out = self.tae.decode(self.tae.unscale_latents(latents), num_frames=frames)
        report("decode", 1, 1)
        return to_uint8(out.asnumpy()[0])


def to_uint8(video: np.ndarray) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    return np.clip(np.rint((video + 1.0) * 127.5), 0, 255).astype(np.uint8).transpose(1, 2, 3, 0)


def resolve_pipeline_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    for candidate in (path, path / "pipeline"):
        if (candidate / PIPELINE_FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"{path}: no {PIPELINE_FILE} here or in {path / 'pipeline'} (is it a pipeline folder?)"
    )


def slugify(prompt: str, limit: int = 60) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    return slug[:limit].rstrip("-") or "prompt"


def save_media(
    frames: np.ndarray, output_dir: str | os.PathLike, stems: Sequence[str], fps: float
) -> list[Path]:
    """Write each (T, H, W, 3) video as `<stem>.mp4` (`<stem>.png` when T = 1); returns the paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for video, stem in zip(frames, stems, strict=True):
        if video.shape[0] == 1:
            path = output_dir / f"{stem}.png"
            write_image(path, video[0])
        else:
            path = output_dir / f"{stem}.mp4"
            write_video(path, video, fps=fps)
        paths.append(path)
    return paths
