"""`mg-train tae-eval`: reconstruction quality of a TAE over a manifest (PSNR, SSIM, LPIPS), per video and mean.

Every clip is the deterministic centre clip of `frames` frames, resized and centre-cropped to `size`, encoded to
its posterior mean and decoded. Metrics follow mg-tae's documented conventions (frames clipped to [-1, 1] and
mapped to [0, 1], each frame scored on its own with data range 1, SSIM as scikit-image's default; with
`quantize` frames are rounded to 8 bits first, like the reference evaluation and like the saved videos). A
video's value is the mean over its frames; the overall value is the mean over all frames of all clips (equal to
the mean of the per-video values when every clip has the same length). LPIPS (VGG16, per frame) is computed on
the same frames, only when `lpips_weights` is given.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from mindspore import Tensor

from mg_data import VideoDataset, is_image_path, load_manifest, to_uint8_frames, write_image, write_video
from mg_data.atomic import write_text
from mg_tae import LPIPS, TAEConfig, TemporalAutoencoder
from mg_tae.metrics import by_position, largest_step_share, psnr_per_frame, ssim_per_frame
from mg_train.config.loader import ConfigError
from mg_train.config.schema import TAEEvalConfig
from mg_train.paths import resolve_model_dir
from mg_train.progress import Progress

METRICS_FILE = "metrics.json"
VIDEOS_DIR = "videos"
CONVENTIONS = (
    "frames clipped to [-1, 1], mapped to [0, 1]{q}; PSNR and SSIM per frame with data range 1 (SSIM: 7x7 uniform "
    "window, K1 0.01, K2 0.03, channels averaged); per video: mean over its frames; overall: mean over all frames "
    "of all clips; reconstruction = decode(posterior mean) of the centre clip"
)


def check_config(cfg: TAEEvalConfig) -> Path:
    """Validate the inputs before loading anything heavy; returns the TAE folder."""
    try:
        model_dir = resolve_model_dir(cfg.checkpoint, "tae") if cfg.checkpoint else None
    except FileNotFoundError as exc:
        raise ConfigError(f"checkpoint: {exc}") from exc
    if model_dir is None:
        raise ConfigError("checkpoint is not set: give a TAE folder or a tae-train run directory")
    if not cfg.manifest or not Path(cfg.manifest).exists():
        raise ConfigError(f"manifest: CSV manifest (or folder of videos) not found at {cfg.manifest!r}")
    if cfg.lpips_weights is not None and not Path(cfg.lpips_weights).is_file():
        raise ConfigError(f"lpips_weights: LPIPS weights not found at {cfg.lpips_weights}")
    try:
        factor = TAEConfig.load(model_dir / "config.json").spatial_compression
    except ValueError as exc:
        raise ConfigError(f"checkpoint: {exc}") from exc
    if cfg.frames < 1 or any(v <= 0 or v % factor for v in cfg.size):
        raise ConfigError(
            f"frames={cfg.frames}, size={list(cfg.size)}: need >= 1 frame and positive multiples of {factor}"
        )
    if min(cfg.size) < 7:
        raise ConfigError(f"size={list(cfg.size)}: SSIM needs frames of at least 7x7 pixels")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError(f"limit={cfg.limit}: must be at least 1 (or null for all clips)")
    if cfg.save_videos < 0 or not cfg.output_dir:
        raise ConfigError("save_videos must be >= 0 and output_dir must be set")
    return model_dir


def side_by_side(video: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """uint8 frames (T, H, 2W, 3): the input on the left, the reconstruction on the right."""
    return np.concatenate([to_uint8_frames(video), to_uint8_frames(recon)], axis=2)


def reconstruct(model: TemporalAutoencoder, video: np.ndarray) -> np.ndarray:
    """decode(posterior mean) of one clip (3, T, H, W) -> (3, T, H, W) float32 (tiled if tiling is enabled)."""
    mean = model.encode(Tensor(video[None])).mean
    return model.decode(mean, num_frames=video.shape[1]).asnumpy()[0]


def run(cfg: TAEEvalConfig) -> dict:
    """Evaluate; writes `metrics.json` and side-by-side videos into `output_dir` and returns the metrics dict
    (`psnr`, `ssim`, `lpips` (None without weights), `per_video`, plus counts and conventions)."""
    model_dir = check_config(cfg)
    out = Path(cfg.output_dir)
    manifest = load_manifest(cfg.manifest, cfg.root)
    dataset = VideoDataset(manifest, num_frames=cfg.frames, size=cfg.size, start="center")
    count = len(dataset) if cfg.limit is None else min(cfg.limit, len(dataset))
    model = TemporalAutoencoder.from_pretrained(model_dir)
    if cfg.tiling:
        model.enable_tiling()
    lpips = LPIPS.from_safetensors(cfg.lpips_weights) if cfg.lpips_weights else None
    (out / VIDEOS_DIR).mkdir(parents=True, exist_ok=True)

    per_video, skipped = [], []
    sums = {"psnr": 0.0, "ssim": 0.0, "lpips": 0.0, "frames": 0}
    group = model.config.temporal_compression
    positions = {
        "psnr": [],
        "ssim": [],
    }  # per clip: the mean score at each frame position within a latent frame
    progress = Progress(count, "tae-eval", every=max(1, count // 20))
    for i in range(count):
        row = manifest[i]
        sample = dataset[i]
        if int(sample["index"]) != i:  # mg-data substitutes unreadable or too short files: never score those
            skipped.append({"video": row.video, "reason": dataset.errors.get(i, "could not be loaded")})
            progress.update(i + 1, skipped=len(skipped))
            continue
        video = sample["video"]
        recon = reconstruct(model, video)
        frame_psnr = psnr_per_frame(recon, video, quantize=cfg.quantize)
        frame_ssim = ssim_per_frame(recon, video, quantize=cfg.quantize)
        entry = {
            "video": row.video,
            "frames": int(video.shape[1]),
            "psnr": float(frame_psnr.mean()),
            "ssim": float(frame_ssim.mean()),
            "lpips": None,
            # share of the frame-to-frame change in the largest step (mg_tae.metrics.largest_step_share)
            "largest_step_share": _finite_or_none(largest_step_share(recon[None])[0]),
            "input_largest_step_share": _finite_or_none(largest_step_share(video[None])[0]),
        }
        positions["psnr"].append(by_position(frame_psnr, len(frame_psnr), group))
        positions["ssim"].append(by_position(frame_ssim, len(frame_ssim), group))
        sums["psnr"] += float(frame_psnr.sum())
        sums["ssim"] += float(frame_ssim.sum())
        sums["frames"] += len(frame_psnr)
        if lpips is not None:
            scored = [_scored_frames(a, cfg.quantize) for a in (recon, video)]
            frame_lpips = lpips(Tensor(scored[0][None]), Tensor(scored[1][None])).asnumpy()[0]
            entry["lpips"] = float(frame_lpips.mean())
            sums["lpips"] += float(frame_lpips.sum())
        if len(per_video) < cfg.save_videos:
            entry["comparison"] = _save_comparison(
                out / VIDEOS_DIR, len(per_video), row.video, video, recon, cfg.fps
            )
        per_video.append(entry)
        progress.update(i + 1, psnr=entry["psnr"], ssim=entry["ssim"])
    progress.close()

    frames = sums["frames"]
    metrics = {
        "psnr": sums["psnr"] / frames if frames else math.nan,
        "ssim": sums["ssim"] / frames if frames else math.nan,
        "lpips": (sums["lpips"] / frames if frames else math.nan) if lpips is not None else None,
        "lpips_note": None if lpips is not None else "LPIPS not computed: no lpips_weights given",
        # motion: median over clips of the largest step's share of all frame-to-frame change (smooth motion over
        # T frames ~1/(T-1); a decoder that repeats each latent frame's content over its frames ~1.0)
        "largest_step_share": _median(entry["largest_step_share"] for entry in per_video),
        "input_largest_step_share": _median(entry["input_largest_step_share"] for entry in per_video),
        # mean PSNR / SSIM at each frame position within a latent frame (0 .. temporal compression - 1)
        "psnr_by_position": _mean_rows(positions["psnr"]),
        "ssim_by_position": _mean_rows(positions["ssim"]),
        "num_videos": len(per_video),
        "num_frames": frames,
        "skipped": skipped,
        "checkpoint": str(model_dir),
        "manifest": str(cfg.manifest),
        "frames": cfg.frames,
        "size": list(cfg.size),
        "quantize": cfg.quantize,
        "tiling": cfg.tiling,
        "conventions": CONVENTIONS.format(q=", rounded to 8 bits" if cfg.quantize else ""),
        "per_video": per_video,
    }
    _write_json(out / METRICS_FILE, metrics)
    lpips_text = f"LPIPS {metrics['lpips']:.4f}" if lpips is not None else metrics["lpips_note"]
    print(
        f"tae-eval: {len(per_video)} clips ({frames} frames), PSNR {metrics['psnr']:.2f} dB, "
        f"SSIM {metrics['ssim']:.4f}, {lpips_text}; largest frame step {_text(metrics['largest_step_share'])} of all "
        f"change (input {_text(metrics['input_largest_step_share'])}); {len(skipped)} skipped; "
        f"wrote {out / METRICS_FILE}",
        flush=True,
    )
    return metrics


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _median(values) -> float | None:
    finite = [v for v in values if v is not None]
    return float(np.median(finite)) if finite else None


def _mean_rows(rows: list[np.ndarray]) -> list[float | None]:
    if not rows:
        return []
    means = np.nanmean(np.stack(rows), axis=0)
    return [_finite_or_none(v) for v in means]


def _text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _scored_frames(video: np.ndarray, quantize: bool) -> np.ndarray:
    """The frames the metrics see, back in [-1, 1] (clipped; 8-bit levels when quantized)."""
    x = (np.clip(video, -1.0, 1.0) + 1.0) / 2.0
    if quantize:
        x = np.round(x * 255.0) / 255.0
    return (x * 2.0 - 1.0).astype(np.float32)


def _save_comparison(
    folder: Path, n: int, name: str, video: np.ndarray, recon: np.ndarray, fps: float
) -> str:
    frames = side_by_side(video, recon)
    stem = f"{n:04d}_{Path(name).stem}"
    if video.shape[1] == 1 or is_image_path(name):
        path = folder / f"{stem}.png"
        write_image(path, frames[0])
    else:
        path = folder / f"{stem}.mp4"
        write_video(path, frames, fps=fps)
    return str(path)


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=1, default=float) + "\n")
