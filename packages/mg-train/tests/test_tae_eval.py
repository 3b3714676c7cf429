"""tae-eval: PSNR / SSIM / LPIPS per video and mean agree with an independent computation (frames read with
the video reader, reconstruction through the training forward, naive numpy metrics on 8-bit frames), the
side-by-side videos hold input | reconstruction, and unreadable clips are reported, never scored."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from mindspore import Tensor
from numpy.lib.stride_tricks import sliding_window_view

from mg_data import make_synthetic_dataset, read_video, to_model_layout, to_uint8_frames
from mg_tae import LPIPS, TAEConfig, TemporalAutoencoder
from mg_train import tae_eval
from mg_train.config.loader import ConfigError, load_config
from mg_train.config.schema import TAEEvalConfig


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), n=12, seed=1, size=32, num_frames=8)


@pytest.fixture(scope="module")
def run_dir(motion_tae_run):
    return motion_tae_run


def _config(*overrides: str) -> TAEEvalConfig:
    return load_config(TAEEvalConfig, None, ["frames=8", "size=[32, 32]", *overrides])


def _uint8(video: np.ndarray) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> float64 (T, 3, H, W) 8-bit levels."""
    return (
        np.clip(np.round((np.clip(video, -1, 1) + 1) * 127.5), 0, 255)
        .astype(np.float64)
        .transpose(1, 0, 2, 3)
    )


def _naive_psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0**2 / mse)


def _naive_ssim(a: np.ndarray, b: np.ndarray, win: int = 7) -> np.ndarray:
    """scikit-image's default SSIM on 8-bit frames (T, C, H, W): 7x7 uniform windows, sample covariance."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    wa = sliding_window_view(a, (win, win), axis=(2, 3)).reshape(*a.shape[:2], -1, win * win)
    wb = sliding_window_view(b, (win, win), axis=(2, 3)).reshape(*b.shape[:2], -1, win * win)
    ma, mb = wa.mean(-1), wb.mean(-1)
    va, vb = wa.var(-1, ddof=1), wb.var(-1, ddof=1)
    cov = ((wa - ma[..., None]) * (wb - mb[..., None])).sum(-1) / (win * win - 1)
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return s.mean(axis=(1, 2))  # over positions and channels


def test_metrics_match_an_independent_computation(synth, run_dir, lpips_file, tmp_path):
    path, weights = lpips_file
    out = tmp_path / "eval"
    metrics = tae_eval.run(
        _config(
            f"checkpoint={run_dir}",
            f"manifest={synth.train_manifest}",
            "limit=2",
            f"lpips_weights={path}",
            f"output_dir={out}",
            "save_videos=1",
        )
    )
    model = TemporalAutoencoder.from_pretrained(run_dir / "tae")
    lpips = LPIPS(weights)
    rows = [line.split(",")[0] for line in synth.train_manifest.read_text().splitlines()[1:3]]
    all_psnr, all_ssim, all_lpips = [], [], []
    for entry, video_path in zip(metrics["per_video"], rows, strict=True):
        assert entry["video"] == video_path
        x = to_model_layout(read_video(synth.train_manifest.parent / video_path))  # all 8 frames
        recon = model(Tensor(x[None]))[0].asnumpy()[0]  # training forward: decode(posterior mean)
        a, b = _uint8(recon), _uint8(x)
        psnr, ssim = _naive_psnr(a, b), _naive_ssim(a, b)
        scored = [(v / 127.5 - 1).transpose(1, 0, 2, 3)[None].astype(np.float32) for v in (a, b)]
        lp = lpips(Tensor(scored[0]), Tensor(scored[1])).asnumpy()[0]
        assert entry["psnr"] == pytest.approx(psnr.mean(), rel=1e-4)
        assert entry["ssim"] == pytest.approx(ssim.mean(), rel=1e-4, abs=1e-5)
        assert entry["lpips"] == pytest.approx(float(lp.mean()), rel=1e-4)
        all_psnr += list(psnr)
        all_ssim += list(ssim)
        all_lpips += list(lp)
    assert metrics["psnr"] == pytest.approx(np.mean(all_psnr), rel=1e-4)
    assert metrics["ssim"] == pytest.approx(np.mean(all_ssim), rel=1e-4, abs=1e-5)
    assert metrics["lpips"] == pytest.approx(np.mean(all_lpips), rel=1e-4)
    assert 5 < metrics["psnr"] < 40 and metrics["lpips"] > 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["psnr"] == pytest.approx(metrics["psnr"]) and len(saved["per_video"]) == 2
    assert saved["checkpoint"] == str(run_dir / "tae")
    # the first clip's side-by-side video: input on the left, reconstruction on the right (H.264, crf 18)
    video = read_video(metrics["per_video"][0]["comparison"])
    x = to_model_layout(read_video(synth.train_manifest.parent / rows[0]))
    recon = model(Tensor(x[None]))[0].asnumpy()[0]
    assert video.shape == (8, 32, 64, 3)
    assert np.abs(video[:, :, :32].astype(float) - to_uint8_frames(x)).mean() < 4
    right = video[:, :, 32:].astype(float)  # noisy random-TAE output loses more to H.264: compare, not bound
    assert np.abs(right - to_uint8_frames(recon)).mean() < 0.5 * np.abs(right - to_uint8_frames(x)).mean()
    assert "comparison" not in metrics["per_video"][1]


def test_unreadable_clips_are_listed_not_scored_and_lpips_needs_weights(synth, run_dir, tmp_path):
    lines = synth.train_manifest.read_text().splitlines()
    broken = lines[1].split(",")
    broken[0] = "videos/missing.mp4"
    manifest = synth.train_manifest.parent / "with_missing.csv"
    manifest.write_text("\n".join([lines[0], ",".join(broken), lines[2]]) + "\n")
    with pytest.warns(UserWarning, match="missing.mp4"):
        metrics = tae_eval.run(
            _config(f"checkpoint={run_dir / 'tae'}", f"manifest={manifest}", f"output_dir={tmp_path}")
        )
    assert [s["video"] for s in metrics["skipped"]] == ["videos/missing.mp4"]
    assert [e["video"] for e in metrics["per_video"]] == [lines[2].split(",")[0]]
    assert metrics["lpips"] is None and "no lpips_weights" in metrics["lpips_note"]
    assert metrics["psnr"] == pytest.approx(metrics["per_video"][0]["psnr"])
    assert json.loads((tmp_path / "metrics.json").read_text())["lpips"] is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("checkpoint=/no/such/run",), "checkpoint: /no/such/run: no tae model here"),
        (("manifest=/no/such.csv",), "manifest: CSV manifest"),
        (("size=[30, 32]",), "positive multiples of 8"),
        (("lpips_weights=/no/lpips.safetensors",), "lpips_weights: LPIPS weights not found"),
    ],
)
def test_bad_inputs_fail_before_any_work(synth, run_dir, tmp_path, overrides, message):
    cfg = _config(
        f"checkpoint={run_dir}",
        f"manifest={synth.train_manifest}",
        f"output_dir={tmp_path / 'out'}",
        *overrides,
    )
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        tae_eval.run(cfg)
    assert not (tmp_path / "out").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.fixture(scope="module")
def moving_clips(tmp_path_factory):
    """Synthetic 64 px clips of 16 frames (two latent frames): one shape moving steadily over a texture."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("moving"), n=4, seed=2, size=64, num_frames=16)


@pytest.mark.parametrize(("parts", "repeats"), [(1, True), (4, False)])
def test_motion_metrics_catch_a_tae_that_repeats_each_latent_frame(moving_clips, tmp_path, parts, repeats):
    """A TAE that is its pixel shortcut alone (zero output convolutions): with one time part it repeats each
    latent frame's block means over its 8 frames (static, then a jump), with four it moves them frame by frame.
    tae-eval's motion numbers must tell the two apart; PSNR alone does not."""
    config = TAEConfig.tiny(pixel_shortcut=True, pixel_shortcut_time_parts=parts)
    model = TemporalAutoencoder(config, seed=0)
    for p in model.trainable_params():
        if ".conv_out." in f".{p.name}":
            p.set_data(Tensor(np.zeros(p.shape, np.float32)))
    model.save_pretrained(tmp_path / "run" / "tae")
    metrics = tae_eval.run(
        load_config(
            TAEEvalConfig,
            None,
            [
                "frames=16",
                "size=[64, 64]",
                f"checkpoint={tmp_path / 'run'}",
                f"manifest={moving_clips.train_manifest}",
                f"output_dir={tmp_path / 'eval'}",
                "save_videos=0",
            ],
        )
    )
    assert metrics["input_largest_step_share"] < 0.25  # the clips themselves move smoothly
    if repeats:
        assert metrics["largest_step_share"] > 0.9
    else:
        assert metrics["largest_step_share"] < 0.3
    by_position = metrics["psnr_by_position"]
    assert len(by_position) == 8 and all(np.isfinite(by_position))
    # recomputed independently for one clip: frame-to-frame change of the reconstruction
    x = to_model_layout(read_video(moving_clips.train_manifest.parent / metrics["per_video"][0]["video"]))
    recon = model.decode(model.encode(Tensor(x[None])).mean).asnumpy()[0]
    changes = np.abs(np.diff((np.clip(recon, -1, 1) + 1) / 2, axis=1)).mean(axis=(0, 2, 3))
    assert metrics["per_video"][0]["largest_step_share"] == pytest.approx(
        changes.max() / changes.sum(), rel=1e-4
    )
