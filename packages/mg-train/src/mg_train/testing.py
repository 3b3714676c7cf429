"""Helpers for tests of mg-train and of packages built on it (mg-demo): a tiny random pipeline in seconds, tiny
TAEs with working temporal layers, and small transformer-training inputs with a fast run config."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from mindspore import Tensor
from safetensors.numpy import load_file

from mg_data import LatentCacheWriter, cache_key, load_manifest, make_synthetic_dataset
from mg_data.editing import make_editing_dataset
from mg_data.personalization import make_personalization_dataset
from mg_tae import TAEConfig, TemporalAutoencoder
from mg_train.config.loader import from_dict
from mg_train.config.schema import TransformerTrainConfig
from mg_train.pipeline import MovieGenPipeline, PipelineInfo
from mg_transformer import MovieGenTransformer, TransformerConfig
from mg_transformer.editing import EditTransformer
from mg_transformer.personalized import PersonalizedTransformer
from mg_transformer.text import TextEmbedder
from mg_transformer.vision import CLIPVisionEncoder

TINY_TEXT = {"encoders": {"ul2": "tiny", "byt5": "tiny", "metaclip": "tiny"}, "seed": 0, "max_lengths": {}}
# Transformer overrides of the tiny preset for training tests: two layers, 2 x 4 x 4 patches of 32 px clips.
TINY_MODEL = {
    "num_layers": 2,
    "hidden_size": 32,
    "ffn_size": 64,
    "num_heads": 2,
    "pos_embed_max_size": [2, 4, 4],
}
LATENT_STD = 0.05


def tiny_random_pipeline(
    seed: int = 0,
    frames: int = 16,
    size: tuple[int, int] = (64, 64),
    jit: bool = False,
    personalized: bool = False,
    editing: bool = False,
    **transformer_overrides,
) -> MovieGenPipeline:
    """Untrained tiny transformer + tiny TAE + tiny text encoders: real shapes and code paths, random output.
    With `personalized` a PT2V pipeline (tiny vision tower), whose zero-initialised layers get small random
    values too, so the reference image visibly changes the output. With `editing` a Movie Gen Edit pipeline
    (the default tasks) whose condition columns are random too, so the input video changes the output."""
    text = TextEmbedder(TINY_TEXT["encoders"], seed=TINY_TEXT["seed"])
    config = TransformerConfig.preset("tiny", text_dims=dict(text.dims), **transformer_overrides)
    transformer = MovieGenTransformer(config)
    transformer.init_weights(seed)
    if personalized or editing:
        rng = np.random.default_rng(seed)
        for param in transformer.get_parameters():
            if not param.asnumpy().any():
                param.set_data(Tensor(0.05 * rng.standard_normal(param.shape).astype(np.float32)))
    if editing:
        transformer = EditTransformer.from_t2v(transformer, seed=seed)
        weight = transformer.transformer.patch_embed.weight
        half = weight.shape[1] // 2
        values = weight.asnumpy()
        values[:, half:] = 0.05 * np.random.default_rng(seed + 1).standard_normal(values[:, half:].shape)
        weight.set_data(Tensor(values))
    if personalized:
        vision = CLIPVisionEncoder.from_source("tiny", seed=seed)
        transformer = PersonalizedTransformer(transformer, vision, seed=seed)
    tae = TemporalAutoencoder(TAEConfig.tiny(), seed=seed)
    info = PipelineInfo(
        fps=8.0,
        frames=frames,
        size=size,
        text=dict(TINY_TEXT),
        example_prompts=["a red circle moving left", "a blue square moving up"],
    )
    return MovieGenPipeline(transformer, tae, text, info, jit=jit)


def tiny_tae_with_motion(seed: int = 0, **config_overrides: Any) -> TemporalAutoencoder:
    """A random tiny TAE whose temporal layers are not the identity (frames interact), as a trained one's."""
    model = TemporalAutoencoder(TAEConfig.tiny(**config_overrides), seed=seed)
    rng = np.random.default_rng(0)
    for p in model.trainable_params():
        if "temporal" in p.name and p.ndim > 1:
            p.set_data(Tensor(p.asnumpy() + 0.05 * rng.standard_normal(p.shape).astype(np.float32)))
    return model


def caption_pattern(caption: str, shape: tuple[int, ...]) -> np.ndarray:
    """A fixed latent per caption: what a trained model can learn to predict from the text."""
    return np.random.default_rng(zlib.crc32(caption.encode())).standard_normal(shape).astype(np.float32)


def make_training_data(
    root: Path,
    n: int = 10,
    num_images: int = 0,
    with_tae: bool = True,
    personalization: bool = False,
    editing: bool = False,
) -> SimpleNamespace:
    """Transformer-training inputs under `root`: synthetic 32 px clips of 16 frames (+ images), a latent cache
    whose means are a fixed pattern per caption (std 0.05; images get one latent frame), a tiny-encoder text
    cache and a tiny TAE folder (named by the latent cache unless `with_tae` is False). With `personalization`
    the clips are mg-data's PT2V set (reference columns; captions name the motion only) and the pattern is per
    caption and subject, so only the reference tells the subject apart. With `editing` the clips are mg-data's
    video editing set (captions are the instructions; the sources are cached too, each with its own pattern)."""
    if editing:
        synth = make_editing_dataset(root / "synth", form="video", n=n, seed=0, size=32, num_frames=16)
    elif personalization:
        synth = make_personalization_dataset(root / "synth", n=n, seed=0, size=32, num_frames=16)
    else:
        synth = make_synthetic_dataset(
            root / "synth", n=n, seed=0, size=32, num_frames=16, num_images=num_images
        )
    tae_dir = root / "tae"
    tae = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
    tae.save_pretrained(tae_dir)
    writer = LatentCacheWriter(
        root / "latents",
        scaling_factor=tae.config.scaling_factor,
        shift_factor=tae.config.shift_factor,
        latent_channels=16,
        frames=16,
        size=(32, 32),
        tae=str(tae_dir) if with_tae else "",
    )
    rows = [row for path in (synth.train_manifest, synth.val_manifest) for row in load_manifest(path).rows]
    sources = [row.extra["source"] for row in rows] if editing else []
    for source in sources:
        mean = caption_pattern(source, (16, 2, 4, 4))
        writer.write(source, mean, np.full_like(mean, LATENT_STD))
    for row in rows:
        frames = 1 if row.video.endswith(".png") else 2
        subject = f"{row.extra.get('color')} {row.extra.get('shape')} " if personalization else ""
        mean = caption_pattern(subject + row.caption, (16, frames, 4, 4))
        writer.write(row.video, mean, np.full_like(mean, LATENT_STD))
    TextEmbedder.tiny(seed=0).write_cache(
        root / "text",
        keys=[cache_key(r.video) for r in rows],
        prompts=[r.caption for r in rows],
        progress=False,
    )
    return SimpleNamespace(
        root=root,
        train=str(synth.train_manifest),
        val=str(synth.val_manifest),
        latents=str(root / "latents"),
        text=str(root / "text"),
        tae=str(tae_dir),
        scaling=tae.config.scaling_factor,
        shift=tae.config.shift_factor,
    )


def transformer_train_config(inputs: SimpleNamespace, out: Path, **sections: Any) -> TransformerTrainConfig:
    """A tiny, fast `train` config on `make_training_data` inputs; `sections` update the config dict section by
    section (e.g. `optim={"lr": 0}`, `latent_cache=None`)."""
    config: dict[str, Any] = {
        "model": {"preset": "tiny", "overrides": dict(TINY_MODEL)},
        "latent_cache": inputs.latents,
        "text_cache": inputs.text,
        "flow": {"text_dropout": 0.25, "val_timesteps": 2},
        "data": {"manifest": inputs.train, "frames": 16, "size": [32, 32], "batch_size": 2},
        "optim": {"lr": 3e-3, "warmup_steps": 2, "grad_clip": 1.0},
        "train": {
            "output_dir": str(out),
            "steps": 4,
            "seed": 3,
            "jit": False,
            "log_every": 100,
            "save_every": 100,
        },
    }
    for name, values in sections.items():
        if isinstance(values, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **values}
        else:
            config[name] = values
    return from_dict(TransformerTrainConfig, config, "test config")


def final_weights(run_dir: str | Path, folder: str = "transformer") -> dict[str, np.ndarray]:
    """The exported model of a run (`<run>/<folder>/model.safetensors`)."""
    return load_file(str(Path(run_dir) / folder / "model.safetensors"))


def run_metrics(run_dir: str | Path) -> list[dict]:
    """The lines of a run's metrics.jsonl."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def measure_step(cfg: TransformerTrainConfig, step: int = 2) -> dict[str, Any]:
    """Run `transformer_train.run(cfg)` (PyNative: `train.jit` false) and return what optimizer step `step`
    sent and what the optimizer holds, on this rank: `{"bytes": {op: n}, "calls": {op: n}, "state": {...}}`,
    the traffic as `mg_parallel.comm.traffic` counts it between the progress updates of steps `step - 1` and
    `step`, the state as `ZeroOptimizer.memory_report` counts it. What the planner (`mg_train.planning`)
    predicts is checked against this."""
    from mg_parallel.comm import traffic
    from mg_train import engine
    from mg_train.progress import Progress
    from mg_train.transformer_train import run

    if cfg.train.jit:
        raise ValueError("measure_step counts collectives in PyNative: set train.jit false")
    window: dict[str, Any] = {}
    built: dict[str, Any] = {}
    update, build = Progress.update, engine.build_optimizer

    def counting_update(self, at, **metrics):
        update(self, at, **metrics)
        if "loss" in metrics and at == step - 1:
            traffic.reset()
            traffic.enabled = True
        if "loss" in metrics and at == step:
            traffic.enabled = False
            window.update(bytes=dict(traffic.bytes), calls=dict(traffic.calls))

    def recording_build(*args, **kwargs):
        built["zero"], optimizer = build(*args, **kwargs)
        return built["zero"], optimizer

    Progress.update, engine.build_optimizer = counting_update, recording_build
    try:
        run(cfg)
    finally:
        Progress.update, engine.build_optimizer = update, build
        traffic.enabled = False
    if not window:
        raise ValueError(f"the run ended before step {step}: set train.steps >= {step}")
    return {**window, "state": built["zero"].memory_report()}
