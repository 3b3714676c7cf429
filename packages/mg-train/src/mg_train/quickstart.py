"""`mg-train quickstart`: the whole Movie Gen recipe, end to end, small enough for 2 CPU cores.

1. a synthetic captioned video dataset (coloured shapes moving over textured backgrounds);
2. a tiny TAE trained on it, with its PSNR/SSIM on held-out clips;
3. latent and text-embedding caches (tiny random text encoders reading word tokens: no downloads);
4. a tiny transformer trained on the caches with rectified flow;
5. videos sampled for held-out captions, checked for the caption's colour and direction by reading the pixels;
6. a loss plot (PNG) and a short report (Markdown and JSON).
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mg_data import (
    SyntheticDataset,
    analyze_clip,
    load_manifest,
    make_synthetic_dataset,
    read_video,
    write_manifest,
)
from mg_data.atomic import write_text
from mg_train import caching, tae_eval, tae_train, transformer_train
from mg_train.config.loader import ConfigError
from mg_train.config.schema import (
    CacheLatentsConfig,
    CacheTextConfig,
    DataConfig,
    FlowConfig,
    OptimConfig,
    QuickstartConfig,
    RunConfig,
    TAEEvalConfig,
    TAELossConfig,
    TAEModelConfig,
    TAETrainConfig,
    TextConfig,
    TransformerModelConfig,
    TransformerTrainConfig,
)
from mg_train.paths import METRICS, PIPELINE_DIR
from mg_train.pipeline import MovieGenPipeline, bundle_text_encoders, save_media, slugify
from mg_transformer.text import ENCODER_NAMES, TextEncoder, word_level_tokenizer

# Token limit of the word-level tiny encoders: the synthetic captions have 5 words (+ EOS); room for longer prompts.
WORD_MAX_LENGTH = 16


def _say(message: str) -> None:
    print(f"\n== {message}", file=sys.stderr, flush=True)


class _Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.stages: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        _say(name)
        start = time.perf_counter()
        result = fn()
        self.stages[name] = round(time.perf_counter() - start, 1)
        print(
            f"   {name}: {self.stages[name]:.0f} s (total {time.perf_counter() - self.t0:.0f} s)",
            file=sys.stderr,
        )
        return result

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.t0, 1)

    def summary(self) -> dict[str, Any]:
        """A report's first fields: the stage times, the total and the peak memory of this process or a child."""
        peak = max(
            resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        )
        return {"seconds": self.stages, "total_seconds": self.total, "peak_rss_gib": round(peak / 2**20, 2)}


# The quickstart's TAE: the tiny preset with mg-tae's pixel shortcut.
QUICKSTART_TAE = {"pixel_shortcut": True}


def check_config(cfg: QuickstartConfig) -> None:
    """Fail before any work on values the later stages would reject."""
    from mg_tae.config import TAEConfig
    from mg_transformer.config import TransformerConfig

    compression = TAEConfig.tiny(**QUICKSTART_TAE).spatial_compression
    patch = TransformerConfig.preset("tiny", **cfg.transformer).patch_size[1:]
    multiple = compression * int(np.lcm(*patch))
    if cfg.size < multiple or cfg.size % multiple:
        raise ConfigError(
            f"size={cfg.size}: must be a positive multiple of {multiple} "
            f"(TAE {compression}x, transformer patch {patch[0]}x{patch[1]})"
        )
    if cfg.tae_crop is not None and (
        cfg.tae_crop < compression or cfg.tae_crop % compression or cfg.tae_crop > cfg.size
    ):
        raise ConfigError(
            f"tae_crop={cfg.tae_crop}: must be a multiple of {compression} between {compression} and "
            f"size={cfg.size}"
        )
    if cfg.num_images < 0 or not 0.0 <= cfg.tae_image_ratio < 1.0:
        raise ConfigError(
            f"num_images={cfg.num_images}, tae_image_ratio={cfg.tae_image_ratio}: need num_images >= 0 and "
            "0 <= tae_image_ratio < 1"
        )
    if not 0.0 < cfg.travel <= 1.0 or not 0.0 <= cfg.start_jitter <= 1.0:
        raise ConfigError(
            f"travel={cfg.travel}, start_jitter={cfg.start_jitter}: need travel in (0, 1] and start_jitter in [0, 1]"
        )
    lo, hi = cfg.shape_size
    if not 0.02 <= lo <= hi <= 0.3 or not 0.0 <= cfg.texture_contrast <= 4.0:
        raise ConfigError(
            f"shape_size={list(cfg.shape_size)}, texture_contrast={cfg.texture_contrast}: need "
            "0.02 <= low <= high <= 0.3 and texture_contrast in [0, 4]"
        )
    if cfg.num_clips < 10:
        raise ConfigError(f"num_clips={cfg.num_clips}: need at least 10 (one in ten is held out)")
    for key in (
        "frames",
        "tae_steps",
        "tae_batch_size",
        "tae_image_batch_size",
        "transformer_steps",
        "transformer_batch_size",
    ):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key}={getattr(cfg, key)}: must be at least 1")
    unknown = [name for name in cfg.text_encoders if name not in ENCODER_NAMES]
    if not cfg.text_encoders or unknown or len(set(cfg.text_encoders)) != len(cfg.text_encoders):
        raise ConfigError(
            f"text_encoders={list(cfg.text_encoders)}: expected one or more distinct names of {', '.join(ENCODER_NAMES)}"
        )
    if not cfg.transformer_lr > 0:
        raise ConfigError(f"transformer_lr={cfg.transformer_lr}: must be > 0")
    if cfg.sample_prompts < 1 or cfg.sample_steps < 1:
        raise ConfigError("sample_prompts and sample_steps must be at least 1")


def make_data(cfg: QuickstartConfig, root: Path) -> tuple[SyntheticDataset, Path]:
    """The synthetic clips (train/val/all manifests under `root`) and the TAE's training manifest: the training
    clips plus `num_images` stills written under `root/stills` (a separate set, so held-out captions, latent caches
    and the transformer see clips only)."""
    looks = dict(
        size=cfg.size,
        shape_size=cfg.shape_size,
        texture_contrast=cfg.texture_contrast,
        travel=cfg.travel,
        start_jitter=cfg.start_jitter,
    )
    clips = make_synthetic_dataset(
        root, n=cfg.num_clips, seed=cfg.seed, num_frames=cfg.frames, fps=cfg.fps, **looks
    )
    return clips, add_stills(cfg, root, clips.train_manifest)


def add_stills(cfg: QuickstartConfig, root: Path, train_manifest: Path) -> Path:
    """The TAE's training manifest: the training clips plus `num_images` stills under `root/stills` (or the
    clips' manifest itself without stills)."""
    if not cfg.num_images:
        return train_manifest
    stills = make_synthetic_dataset(
        root / "stills",
        n=0,
        num_images=cfg.num_images,
        seed=cfg.seed + 1,
        val_fraction=0.0,
        size=cfg.size,
        shape_size=cfg.shape_size,
        texture_contrast=cfg.texture_contrast,
        travel=cfg.travel,
        start_jitter=cfg.start_jitter,
    )
    rows = load_manifest(train_manifest).rows
    for row in load_manifest(stills.train_manifest).rows:
        row.video = f"stills/{row.video}"
        rows.append(row)
    return write_manifest(root / "tae_train.csv", rows)


def make_text_encoders(cfg: QuickstartConfig, manifest: Path, root: Path) -> TextConfig:
    """Tiny random text encoders for the captions: ul2 and metaclip with a word-level vocabulary of the training
    captions, saved as Hugging Face folders under `root` (the pipeline refers to them), and byt5 as the byte-level
    preset.

    Random encoders over bytes leave the transformer to work out words from byte mixtures, which it learns
    several times slower (the quickstart's samples then ignored the direction words); one token per word makes
    each word a distinct input, and 6 tokens instead of 31 also make the training step ~1.4x faster."""
    tokenizer = word_level_tokenizer([row.caption for row in load_manifest(manifest).rows])
    encoders: dict[str, str] = {}
    max_lengths: dict[str, int] = {}
    for name in cfg.text_encoders:
        if name == "byt5":
            encoders[name] = "tiny"
            continue
        folder = (root / name).resolve()
        TextEncoder.preset(
            name, "tiny", seed=cfg.seed, max_length=WORD_MAX_LENGTH, tokenizer=tokenizer
        ).save_pretrained(folder)
        encoders[name] = str(folder)
        max_lengths[name] = WORD_MAX_LENGTH
    return TextConfig(encoders=encoders, seed=cfg.seed, max_lengths=max_lengths)


def quickstart_data(cfg: QuickstartConfig, train: Path, val: Path, batch_size: int) -> DataConfig:
    """The clips' data section: the quickstart's frames and size."""
    return DataConfig(
        manifest=str(train),
        val_manifest=str(val),
        frames=cfg.frames,
        size=(cfg.size, cfg.size),
        batch_size=batch_size,
    )


def tae_config(cfg: QuickstartConfig, train: Path, val: Path, output_dir: Path) -> TAETrainConfig:
    """The quickstart's TAE run: the tiny preset with the pixel shortcut on random crops of the clips and on
    whole stills (when the manifest has them)."""
    data = quickstart_data(cfg, train, val, cfg.tae_batch_size)
    data.crop = (cfg.tae_crop, cfg.tae_crop) if cfg.tae_crop else None
    if cfg.num_images:
        data.image_ratio = cfg.tae_image_ratio
        data.image_batch_size = cfg.tae_image_batch_size
    return TAETrainConfig(
        # The pixel shortcut carries each block's mean colour: without it the tiny TAE learnt one or two of the
        # palette's three colour axes in 220 steps (red = yellow); with it, all four colours from step 20.
        model=TAEModelConfig(preset="tiny", overrides=dict(QUICKSTART_TAE)),
        loss=TAELossConfig(kl_weight=1e-6, mse_weight=4.0),
        data=data,
        calibrate_latents=32,
        optim=OptimConfig(lr=2e-3, warmup_steps=20, schedule="cosine", min_lr=2e-4, grad_clip=1.0),
        train=RunConfig(
            output_dir=str(output_dir),
            steps=cfg.tae_steps,
            seed=cfg.seed,
            log_every=10,
            val_every=0,
            save_every=max(cfg.tae_steps, 1),
            keep_last=1,
            jit=cfg.jit,
        ),
    )


def make_caches(
    cfg: QuickstartConfig, tae_dir: Path, all_manifest: Path, train_manifest: Path, out: Path
) -> tuple[Path, Path, TextConfig]:
    """Word-level tiny text encoders for the training captions, and the latent and text caches of every clip."""
    text_cfg = make_text_encoders(cfg, train_manifest, out / "text_encoders")
    latents = caching.cache_latents(
        CacheLatentsConfig(
            checkpoint=str(tae_dir),
            manifest=str(all_manifest),
            output_dir=str(out / "latents"),
            frames=cfg.frames,
            size=(cfg.size, cfg.size),
        )
    )
    text = caching.cache_text(
        CacheTextConfig(manifest=str(all_manifest), output_dir=str(out / "text"), text=text_cfg)
    )
    return latents, text, text_cfg


def transformer_config(
    cfg: QuickstartConfig,
    data: DataConfig,
    tae_dir: Path,
    text_cfg: TextConfig,
    latent_cache: Path,
    text_cache: Path,
    output_dir: Path,
    steps: int | None = None,
) -> TransformerTrainConfig:
    """The quickstart's transformer run on the caches (`steps`: default `transformer_steps`)."""
    steps = cfg.transformer_steps if steps is None else steps
    return TransformerTrainConfig(
        model=TransformerModelConfig(preset="tiny", overrides=dict(cfg.transformer)),
        tae=str(tae_dir),
        text=text_cfg,
        latent_cache=str(latent_cache),
        text_cache=str(text_cache),
        flow=FlowConfig(text_dropout=0.1),
        data=data,
        optim=OptimConfig(
            lr=cfg.transformer_lr,
            warmup_steps=50,
            schedule="cosine",
            min_lr=cfg.transformer_lr / 10,
            grad_clip=1.0,
        ),
        train=RunConfig(
            output_dir=str(output_dir),
            steps=steps,
            seed=cfg.seed,
            log_every=50,
            val_every=max(steps // 5, 1),
            val_batches=2,
            save_every=max(steps, 1),
            keep_last=1,
            jit=cfg.jit,
        ),
    )


def run(cfg: QuickstartConfig) -> dict[str, Any]:
    """The recipe of `cfg.task`: text-to-video (this module), personalised video (`pt2v_quickstart`) or video
    editing (`edit_quickstart`)."""
    check_config(cfg)
    if cfg.task == "pt2v":
        from mg_train import pt2v_quickstart

        return pt2v_quickstart.run(cfg)
    if cfg.task == "edit":
        from mg_train import edit_quickstart

        return edit_quickstart.run(cfg)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timer = _Timer()
    size = (cfg.size, cfg.size)

    data, tae_manifest = timer.run("1/6 synthetic dataset", lambda: make_data(cfg, out / "data"))
    print(
        f"   {data.num_train} training and {data.num_val} held-out clips in {data.root}"
        + (f", {cfg.num_images} still images for the TAE" if cfg.num_images else ""),
        file=sys.stderr,
    )

    def clip_data(batch_size: int) -> DataConfig:
        return quickstart_data(cfg, data.train_manifest, data.val_manifest, batch_size)

    tae_cfg = tae_config(cfg, tae_manifest, data.val_manifest, out / "tae_run")
    tae_dir = timer.run("2/6 train the TAE", lambda: tae_train.run(tae_cfg))

    eval_cfg = TAEEvalConfig(
        checkpoint=str(tae_dir),
        manifest=str(data.val_manifest),
        frames=cfg.frames,
        size=size,
        output_dir=str(out / "tae_eval"),
        save_videos=data.num_val,  # every held-out clip: colour, direction and motion are read back from them
        fps=cfg.fps,
    )
    tae_metrics = timer.run("3/6 evaluate the TAE on held-out clips", lambda: tae_eval.run(eval_cfg))
    recon_check = _check_reconstructions(tae_metrics, data, cfg.size)
    print(
        f"   held-out PSNR {tae_metrics['psnr']:.2f} dB, SSIM {tae_metrics['ssim']:.3f}; in the saved "
        f"reconstructions colour is right in {recon_check['color_accuracy']:.0%} and direction in "
        f"{recon_check['direction_accuracy']:.0%}; the shape's largest frame step is "
        f"{_share(recon_check['largest_step_share'])} of its path (inputs {_share(recon_check['input_largest_step_share'])})",
        file=sys.stderr,
    )

    latent_cache, text_cache, text_cfg = timer.run(
        "4/6 cache latents and text embeddings",
        lambda: make_caches(cfg, tae_dir, data.all_manifest, data.train_manifest, out),
    )
    tf_cfg = transformer_config(
        cfg,
        clip_data(cfg.transformer_batch_size),
        tae_dir,
        text_cfg,
        latent_cache,
        text_cache,
        out / "transformer_run",
    )
    run_dir = timer.run("5/6 train the transformer", lambda: transformer_train.run(tf_cfg))
    # The pipeline also at <output_dir>/pipeline: where `mg-demo` and `mg-train sample --checkpoint
    # <output_dir>` look for it; with its (tiny) text encoders inside, so it samples wherever it is moved.
    pipeline = out / PIPELINE_DIR
    shutil.rmtree(pipeline, ignore_errors=True)
    shutil.copytree(Path(run_dir) / PIPELINE_DIR, pipeline)
    bundle_text_encoders(pipeline)

    samples = timer.run("6/6 sample held-out captions", lambda: _sample_and_check(cfg, data, pipeline, out))
    report = {
        **timer.summary(),
        "tae": {
            "psnr": tae_metrics["psnr"],
            "ssim": tae_metrics["ssim"],
            "psnr_by_position": tae_metrics["psnr_by_position"],
            "dir": str(tae_dir),
            "reconstructions": recon_check,
        },
        "samples": samples,
        "pipeline": str(pipeline),
    }
    plot_losses(
        {
            "TAE (L1 + KL)": Path(tae_cfg.train.output_dir) / METRICS,
            "transformer (velocity MSE)": Path(run_dir) / METRICS,
        },
        out / "loss.png",
    )
    write_report(report, out)
    _say(f"done in {timer.total:.0f} s: report {out / 'report.md'}, samples in {out / 'samples'}")
    return report


def _truth(manifest: Path) -> dict[str, tuple[str | None, str | None]]:
    """video path -> (colour, direction) from the synthetic manifest's ground-truth columns."""
    return {
        row.video: (row.extra.get("color"), row.extra.get("direction"))
        for row in load_manifest(manifest).rows
    }


def _check_reconstructions(metrics: dict[str, Any], data, size: int) -> dict[str, Any]:
    """Colour and direction read back from the TAE's saved reconstructions (right half of tae-eval's side-by-side
    videos): the ceiling for the samples, which the TAE decodes."""
    truth = _truth(data.val_manifest)
    results = []
    for entry in metrics["per_video"]:
        if not str(entry.get("comparison", "")).endswith(".mp4"):
            continue
        frames = read_video(entry["comparison"])
        seen = analyze_clip(frames[:, :, -size:], layout="THWC")
        source = analyze_clip(frames[:, :, :size], layout="THWC")
        color, direction = truth[entry["video"]]
        results.append(
            (
                seen.color == color,
                seen.direction == direction,
                seen.largest_step_share,
                source.largest_step_share,
            )
        )
    n = max(len(results), 1)
    return {
        "clips": len(results),
        "color_accuracy": sum(r[0] for r in results) / n,
        "direction_accuracy": sum(r[1] for r in results) / n,
        # the shape centre's largest frame-to-frame step as a share of its path (smooth: ~1/15; static-then-jump: 1)
        "largest_step_share": _median_share(r[2] for r in results),
        "input_largest_step_share": _median_share(r[3] for r in results),
    }


def _median_share(values) -> float | None:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.median(finite)) if finite else None


def _sample_and_check(cfg: QuickstartConfig, data, pipeline: Path, out: Path) -> dict[str, Any]:
    """Sample one video per distinct caption (held-out ones first, then training ones) and read colour, motion
    and its smoothness back."""
    rows = load_manifest(data.val_manifest).rows + load_manifest(data.train_manifest).rows
    captions, wanted = [], {}
    for row in rows:
        if row.caption not in wanted:
            captions.append(row.caption)
            wanted[row.caption] = (row.extra.get("color"), row.extra.get("direction"))
    captions = captions[: cfg.sample_prompts]
    pipe = MovieGenPipeline.from_pretrained(pipeline, jit=cfg.jit)
    videos = pipe.generate(captions, steps=cfg.sample_steps, cfg_scale=cfg.cfg_scale, seed=cfg.seed)
    stems = [f"{i:02d}-{slugify(c)}" for i, c in enumerate(captions)]
    paths = save_media(videos, out / "samples", stems, cfg.fps)
    results = []
    for caption, video, path in zip(captions, videos, paths, strict=True):
        seen = analyze_clip(video, layout="THWC")
        color, direction = wanted[caption]
        results.append(
            {
                "caption": caption,
                "file": str(path),
                "seen_color": seen.color,
                "seen_direction": seen.direction,
                "color_ok": seen.color == color,
                "direction_ok": seen.direction == direction,
                "largest_step_share": _finite_or_none(seen.largest_step_share),
            }
        )
    n = max(len(results), 1)
    return {
        "videos": results,
        "largest_step_share": _median_share(r["largest_step_share"] for r in results),
        "color_accuracy": sum(r["color_ok"] for r in results) / n,
        "direction_accuracy": sum(r["direction_ok"] for r in results) / n,
        "chance": {"color": 1 / 4, "direction": 1 / 4},
    }


def _share(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def plot_losses(curves: dict[str, Path], path: Path) -> Path:
    """One panel per metrics.jsonl: the training loss per step (light) and its running mean (dark)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (title, metrics) in zip(axes[0], curves.items(), strict=True):
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        train = [(r["step"], r["loss"]) for r in records if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        if train:
            steps, losses = np.array(train).T
            ax.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8)
            window = max(len(losses) // 30, 1)
            smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, color="tab:blue", label="train")
        if val:
            steps, losses = np.array(val).T
            ax.plot(steps, losses, "o-", color="tab:orange", label="validation")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report_header(report: dict[str, Any], title: str) -> list[str]:
    """The report's title, total time, peak memory and stage-times table (markdown lines)."""
    return [
        f"# {title}",
        "",
        f"Total time: {report['total_seconds']:.0f} s; peak memory {report['peak_rss_gib']:.2f} GiB.",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {name} | {secs:.0f} |" for name, secs in report["seconds"].items()],
        "",
    ]


def write_report(report: dict[str, Any], out: Path) -> None:
    write_text(out / "report.json", json.dumps(report, indent=1))
    samples = report["samples"]
    lines = [
        *report_header(report, "mg quickstart report"),
        f"TAE on held-out clips: PSNR {report['tae']['psnr']:.2f} dB, SSIM {report['tae']['ssim']:.3f}; read back "
        f"from {report['tae']['reconstructions']['clips']} saved reconstructions, colour right in "
        f"{report['tae']['reconstructions']['color_accuracy']:.0%} and direction in "
        f"{report['tae']['reconstructions']['direction_accuracy']:.0%} (tae_eval/videos: input left, output right).",
        "",
        "Motion inside latent frames (the shape centre's largest frame-to-frame step as a share of its whole path, "
        "median over clips; smooth motion over 16 frames: ~0.07, standing still for 8 frames and then jumping: 1.0): "
        f"TAE reconstructions {_share(report['tae']['reconstructions']['largest_step_share'])} (their inputs "
        f"{_share(report['tae']['reconstructions']['input_largest_step_share'])}), samples "
        f"{_share(samples['largest_step_share'])}. PSNR by frame position within a latent frame (0-7): "
        + ", ".join(_share(v, ".1f") for v in report["tae"].get("psnr_by_position", []))
        + " dB.",
        "",
        f"Samples for {len(samples['videos'])} captions (held-out ones first), read back from the pixels (dominant "
        "saturated colour, motion of its centre):",
        f"colour right in {samples['color_accuracy']:.0%}, direction right in {samples['direction_accuracy']:.0%} "
        "(chance: 25% each).",
        "",
        "| caption | seen colour | seen direction | largest step | file |",
        "|---|---|---|---|---|",
        *[
            f"| {v['caption']} | {v['seen_color']} {'✓' if v['color_ok'] else '✗'} | "
            f"{v['seen_direction']} {'✓' if v['direction_ok'] else '✗'} | {_share(v['largest_step_share'])} | "
            f"{Path(v['file']).name} |"
            for v in samples["videos"]
        ],
        "",
        f"Loss curves: loss.png. Sampling pipeline: {report['pipeline']} (`mg-train sample --checkpoint ...`, `mg-demo`).",
    ]
    write_text(out / "report.md", "\n".join(lines) + "\n")
