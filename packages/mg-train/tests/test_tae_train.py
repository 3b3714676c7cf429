"""tae-train: resume equals a continuous run, training lowers the loss, non-finite steps are skipped and then
stop the run, SIGTERM on a real process leaves a resumable checkpoint, and bad inputs fail before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from safetensors.numpy import load_file

import mg_parallel as mp
from mg_data import make_synthetic_dataset
from mg_tae import LPIPS, TAEConfig, TemporalAutoencoder, outlier_penalty_loss
from mg_train import tae_train
from mg_train.checkpoint import load_checkpoint
from mg_train.config.loader import ConfigError, load_config
from mg_train.config.schema import TAETrainConfig
from mg_train.loader import BatchLoader
from mg_train.optim import NonFiniteLossError

# Two levels, one temporal level: every layer type of the TAE, fast to run (2x compression in T, H, W).
MICRO = "model.overrides={block_out_channels: [8, 16], temporal_downsample_levels: [0], temporal_upsample_levels: [0]}"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), n=12, seed=0, size=32, num_frames=8)


def _config(synth, out: Path, *overrides: str) -> TAETrainConfig:
    """The micro TAE on 4-frame 16 px crops of `synth`'s training clips (None: the overrides name the manifest)."""
    return load_config(
        TAETrainConfig,
        None,
        [
            MICRO,
            *([f"data.manifest={synth.train_manifest}"] if synth is not None else []),
            "data.frames=4",
            "data.size=[16, 16]",
            "data.batch_size=2",
            f"train.output_dir={out}",
            "train.jit=false",
            "train.log_every=100",
            "optim.lr=1e-3",
            *overrides,
        ],
    )


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _checkpoint_weights(run_dir: Path, step: int) -> dict[str, np.ndarray]:
    return load_checkpoint(run_dir / "checkpoints" / f"step_{step:08d}")[0]["model"]


# A run with every piece of state a resume must restore: warmup schedule, EMA, gradient accumulation, sampled
# posterior noise, and joint image/video steps (frames drawn from clips: the synthetic manifest has no images).
RESUME_RECIPE = (
    "data.batch_size=1",
    "optim.grad_accum=2",
    "optim.warmup_steps=3",
    "optim.ema_decay=0.9",
    "data.image_ratio=0.5",
    "train.save_every=2",
    "train.keep_last=5",
)


@pytest.fixture(scope="module")
def continuous(synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("continuous")
    final = tae_train.run(_config(synth, out, "train.steps=3", *RESUME_RECIPE))
    return out, final


def test_resume_gives_the_weights_of_a_continuous_run(synth, continuous, tmp_path):
    out, final = continuous
    tae_train.run(_config(synth, tmp_path, "train.steps=2", *RESUME_RECIPE))
    resumed_final = tae_train.run(_config(synth, tmp_path, "train.steps=3", *RESUME_RECIPE))
    assert final == out / "tae" and resumed_final == tmp_path / "tae"
    for name in ("model.safetensors",):  # the EMA weights written as the final model
        a, b = load_file(str(final / name)), load_file(str(resumed_final / name))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-6, err_msg=key)
    raw_a, raw_b = _checkpoint_weights(out, 3), _checkpoint_weights(tmp_path, 3)
    for key in raw_a:
        np.testing.assert_allclose(raw_b[key], raw_a[key], rtol=0, atol=1e-6, err_msg=key)
    steps_a = [m for m in _metrics(out) if "loss" in m]
    steps_b = [m for m in _metrics(tmp_path) if "loss" in m]
    assert [m["step"] for m in steps_b] == [1, 2, 3]
    # the warmup reached the optimizer: every step had its own LR, also after the resume
    assert [m["lr"] for m in steps_b] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3])
    np.testing.assert_allclose([m["loss"] for m in steps_b], [m["loss"] for m in steps_a], rtol=1e-5)
    # joint image/video training really happened: some steps saw single frames
    assert {m["frames"] for m in steps_a} == {1, 4}
    # the EMA (decay 0.9 over 3 steps) lies between the initial and the trained weights
    init = TemporalAutoencoder(tae_train.tae_config(_config(synth, out).model), seed=0).state_dict()
    key = "encoder.conv_in.spatial.weight"
    ema = load_file(str(final / "model.safetensors"))[key]
    assert 0 < np.abs(ema - init[key]).max() < np.abs(raw_a[key] - init[key]).max()


@pytest.fixture(scope="module")
def two_lengths(tmp_path_factory):
    """A manifest of 2-frame and 4-frame clips (6 each)."""
    from mg_data import load_manifest, write_manifest

    root = tmp_path_factory.mktemp("durations")
    rows = []
    for frames in (2, 4):
        part = make_synthetic_dataset(
            root / f"f{frames}", n=6, seed=frames, size=32, num_frames=frames, val_fraction=0.0
        )
        for row in load_manifest(part.train_manifest).rows:
            row.video = f"f{frames}/{row.video}"
            rows.append(row)
    return write_manifest(root / "train.csv", rows)


def test_duration_buckets_train_each_clip_at_its_length_and_resume_exactly(two_lengths, tmp_path):
    """data.durations {2: 2, 4: 2}: each step draws from one bucket (3 batches each per epoch, so 4 steps see both),
    and a run resumed mid-way reaches the continuous run's weights and losses."""
    recipe = (
        f"data.manifest={two_lengths}",
        "data.durations={2: 2, 4: 2}",
        "data.size=[8, 8]",
        "train.save_every=2",
        "train.keep_last=5",
    )
    tae_train.run(_config(None, tmp_path / "straight", "train.steps=4", *recipe))
    tae_train.run(_config(None, tmp_path / "resumed", "train.steps=2", *recipe))
    tae_train.run(_config(None, tmp_path / "resumed", "train.steps=4", *recipe))
    straight = [m for m in _metrics(tmp_path / "straight") if "loss" in m]
    resumed = [m for m in _metrics(tmp_path / "resumed") if "loss" in m]
    assert {m["frames"] for m in straight} == {2, 4}
    assert [m["frames"] for m in resumed] == [m["frames"] for m in straight]
    np.testing.assert_allclose([m["loss"] for m in resumed], [m["loss"] for m in straight], rtol=1e-5)
    a, b = _checkpoint_weights(tmp_path / "straight", 4), _checkpoint_weights(tmp_path / "resumed", 4)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-6, err_msg=key)


def test_training_lowers_the_reconstruction_loss(synth, continuous):
    out, _ = continuous
    cfg = _config(synth, out, f"data.val_manifest={synth.train_manifest}")
    clips = tae_train.validation_clips(cfg.data, seed=0)
    ctx = mp.init_parallel()
    before = tae_train.validate(tae_train.build_tae(cfg.model, seed=0), clips, 8, 4, ctx)
    trained = tae_train.build_tae(cfg.model, seed=0)
    trained.load_state_dict(_checkpoint_weights(out, 3))
    after = tae_train.validate(trained, clips, 8, 4, ctx)
    # independent check of validate's numbers on the first clip
    x = clips[0]["video"][None]
    recon = trained(Tensor(x))[0].asnumpy()
    assert np.isfinite(after["val_loss"])
    assert after["val_loss"] < 0.9 * before["val_loss"]
    assert after["val_psnr"] > before["val_psnr"] + 0.5
    one = tae_train.validate(trained, clips, 1, 4, ctx)
    assert one["val_loss"] == pytest.approx(float(np.abs(recon - x).mean()), rel=1e-5)
    frames = [(np.clip(recon[0, :, t], -1, 1) + 1) / 2 - (x[0, :, t] + 1) / 2 for t in range(x.shape[2])]
    psnr = np.mean([10 * np.log10(1.0 / np.mean(np.square(f.astype(np.float64)))) for f in frames])
    assert one["val_psnr"] == pytest.approx(psnr, rel=1e-4)


def test_scheduled_lr_reaches_the_optimizer():
    """optim.OptimizerStep's LR must change AdamW's compiled update (it once stayed at the first step's LR)."""
    from mindspore import nn

    from mg_train.config.schema import OptimConfig
    from mg_train.optim import OptimizerStep, build_optimizer

    net = nn.SequentialCell([nn.Dense(3, 3) for _ in range(3)])  # several parameters per AdamW group
    cfg = OptimConfig(lr=1.0, betas=(0.0, 0.0), eps=1e-12, warmup_steps=4, grad_clip=None)
    ctx = mp.init_parallel()
    zero, optimizer = build_optimizer(net, cfg, ctx)
    stepper = OptimizerStep(zero, optimizer, cfg, total_steps=6, ctx=ctx)
    grads = tuple(Tensor(np.full(p.shape, 0.5, np.float32)) for p in zero.params)
    for step in range(6):
        before = [p.asnumpy().copy() for p in zero.params]
        stepper(grads, Tensor(np.float32(1.0)), 1, step)
        expected = min(step + 1, 4) / 4  # with betas 0 AdamW moves every weight by exactly -lr
        for p, b in zip(zero.params, before, strict=True):
            np.testing.assert_allclose(p.asnumpy() - b, -expected, rtol=1e-5, err_msg=f"step {step}")


class _PoisonedLoader(BatchLoader):
    """Batches with NaN pixels at the given batch numbers (a corrupt sample giving a non-finite loss)."""

    poisoned: ClassVar[set[int]] = set()

    def __iter__(self):
        for n, batch in enumerate(super().__iter__()):
            if n in self.poisoned:
                batch = {**batch, "video": np.full_like(batch["video"], np.nan)}
            yield batch


def test_non_finite_steps_are_skipped_then_stop_the_run(synth, tmp_path, monkeypatch):
    monkeypatch.setattr(tae_train, "BatchLoader", _PoisonedLoader)
    monkeypatch.setattr(_PoisonedLoader, "poisoned", {1, 3, 4})
    cfg = _config(
        synth,
        tmp_path,
        "data.batch_size=1",
        "train.steps=8",
        "train.max_nonfinite_steps=2",
        "train.save_every=1",
        "train.keep_last=10",
    )
    with pytest.raises(NonFiniteLossError, match="2 consecutive steps"):
        tae_train.run(cfg)
    lines = [m for m in _metrics(tmp_path) if "loss" in m]
    assert [m["skipped"] for m in lines] == [0, 1, 0, 1, 1]
    assert lines[1]["loss"] is None and "loss" in lines[1]["nonfinite"]  # JSON has no NaN: null, named
    assert np.isfinite(lines[2]["loss"])
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == [f"step_{s:08d}" for s in (1, 2, 3, 4)]  # nothing after the run stopped
    for step in (1, 2, 3, 4):
        for array in _checkpoint_weights(tmp_path, step).values():
            assert np.isfinite(array).all()
    # a skipped step leaves the weights alone; an applied one changes them
    w1, w2, w3 = (_checkpoint_weights(tmp_path, s) for s in (1, 2, 3))
    assert all(np.array_equal(w1[k], w2[k]) for k in w1)
    assert any(not np.array_equal(w2[k], w3[k]) for k in w2)
    state = json.loads((tmp_path / "checkpoints" / "step_00000004" / "state.json").read_text())
    assert state["optimizer_step"]["skipped_total"] == 2
    assert not (tmp_path / "tae").exists()


def test_sigterm_saves_a_checkpoint_that_resumes(synth, tmp_path):
    cfg_file = tmp_path / "tae.yaml"
    out = tmp_path / "run"
    cfg_file.write_text(
        "model:\n  overrides: {block_out_channels: [8, 16], temporal_downsample_levels: [0], "
        "temporal_upsample_levels: [0]}\n"
        f"data:\n  manifest: {synth.train_manifest}\n  frames: 4\n  size: [16, 16]\n  batch_size: 1\n"
        f"train:\n  output_dir: {out}\n  steps: 10000\n  save_every: 10000\n  jit: false\n  log_every: 1\n"
    )
    env = {**os.environ, "GLOG_v": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mg_train", "tae-train", "--config", str(cfg_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        deadline = time.time() + 120
        metrics = out / "metrics.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    assert "stopped by SIGTERM" in output
    checkpoints = sorted((out / "checkpoints").iterdir())
    assert len(checkpoints) == 1
    state = json.loads((checkpoints[0] / "state.json").read_text())
    step = state["step"]
    assert step >= 2 and step == len(_metrics(out))
    # the same command continues from there
    cfg = load_config(TAETrainConfig, cfg_file, [f"train.steps={step + 1}"])
    tae_train.run(cfg)
    assert [m["step"] for m in _metrics(out)][-1] == step + 1
    saved = load_file(str(out / "tae" / "model.safetensors"))
    before = _checkpoint_weights(out, step)
    assert any(not np.array_equal(saved[k], before[k]) for k in saved)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("data.manifest=/no/such/train.csv",), "data.manifest: the training manifest"),
        (("data.val_manifest=/no/such/val.csv",), "data.val_manifest"),
        (("loss.perceptual_weight=1.0",), "loss.lpips_weights is not set"),
        (
            ("loss.perceptual_weight=1.0", "loss.lpips_weights=/no/lpips.safetensors"),
            "loss.lpips_weights: LPIPS",
        ),
        (("data.size=[15, 16]",), "data.size=[15, 16]: height and width must be positive multiples of 2"),
        (("train.val_every=5",), "train.val_every=5 needs data.val_manifest"),
        (("model.pretrained=/no/such/tae",), "model.pretrained: /no/such/tae/config.json not found"),
        (("model.overrides={latent_channel: 8}",), "unknown TAEConfig fields"),
        (("data.image_ratio=1.0",), "data.image_ratio=1.0"),
        (("data.crop=[3, 4]",), "data.crop=[3, 4]: height and width must be positive multiples of 2"),
        (("data.crop=[8, 32]",), "at most data.size=[16, 16]"),
        (("loss.mse_weight=-1",), "loss.mse_weight=-1.0: must be >= 0"),
    ],
)
def test_bad_inputs_fail_before_any_work(synth, tmp_path, overrides, message):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        tae_train.run(_config(synth, out, *overrides))
    assert not out.exists()


def test_mse_weight_adds_the_weighted_mean_squared_error(synth, tmp_path):
    cfg = _config(synth, tmp_path, "loss.kl_weight=1e-3")
    model = TemporalAutoencoder(tae_train.check_config(cfg))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 4, 16, 16)).astype(np.float32)
    noise = rng.standard_normal((2, model.config.latent_channels, 2, 8, 8)).astype(np.float32)
    recon = model(Tensor(x), Tensor(noise))[0].asnumpy()
    plain = tae_train.make_objective(model, cfg.loss, None)(Tensor(x), Tensor(noise))
    cfg.loss.mse_weight = 2.5
    with_mse = tae_train.make_objective(model, cfg.loss, None)(Tensor(x), Tensor(noise))
    np.testing.assert_allclose(with_mse[1].asnumpy(), np.abs(recon - x).mean(), rtol=1e-5)  # L1 unchanged
    expected = plain[0].asnumpy() + 2.5 * np.square(recon.astype(np.float64) - x).mean()
    np.testing.assert_allclose(with_mse[0].asnumpy(), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("term", "overrides"),
    [
        ("opl", ("loss.opl_r=0.5",)),
        ("opl", ("loss.opl_r=0.5", "loss.opl_form=paper")),
        ("lpips", ()),
    ],
)
def test_outlier_penalty_and_lpips_reach_the_objective_and_its_gradients(
    synth, tmp_path, lpips_file, term, overrides
):
    """Weight w on a term adds w * term to the total and w * its gradient to every parameter's gradient, the
    term and its gradient computed here on their own from the model's outputs."""
    cfg = _config(synth, tmp_path, *overrides)
    model = TemporalAutoencoder(tae_train.check_config(cfg), seed=1)
    params = model.trainable_params()
    rng = np.random.default_rng(0)
    x = Tensor(rng.uniform(-1, 1, (1, 3, 2, 16, 16)).astype(np.float32))
    noise = Tensor(rng.standard_normal((1, model.config.latent_channels, 1, 8, 8)).astype(np.float32))
    lpips = LPIPS.from_safetensors(lpips_file[0]) if term == "lpips" else None
    weight = 0.7

    def total_and_grads(w: float):
        setattr(cfg.loss, "perceptual_weight" if term == "lpips" else "opl_weight", w)
        objective = tae_train.make_objective(model, cfg.loss, lpips)
        (total, _, _), grads = ms.value_and_grad(objective, None, params, has_aux=True)(x, noise)
        return float(total.asnumpy()), [g.asnumpy() for g in grads]

    def term_alone(x, noise):
        recon, mean, logvar = model(x, noise)
        if term == "lpips":
            return lpips(recon, x).mean()
        z = mean + ms.ops.exp(0.5 * logvar) * noise
        return outlier_penalty_loss(z, cfg.loss.opl_r, cfg.loss.opl_form)

    base, base_grads = total_and_grads(0.0)
    with_term, term_grads = total_and_grads(weight)
    value, grads = ms.value_and_grad(term_alone, None, params)(x, noise)
    assert float(value.asnumpy()) > 0
    assert with_term == pytest.approx(base + weight * float(value.asnumpy()), rel=1e-5)
    scale = max(np.abs(weight * g.asnumpy()).max() for g in grads)  # float32 noise is relative to this
    changed = 0
    for a, b, g, p in zip(base_grads, term_grads, grads, params, strict=True):
        np.testing.assert_allclose(b - a, weight * g.asnumpy(), rtol=1e-3, atol=1e-5 * scale, err_msg=p.name)
        changed += int(np.abs(b - a).max() > 1e-3 * scale)
    assert changed > len(params) // 4  # the term moves most of the encoder (and, for LPIPS, the decoder)


DP_RECIPE = ("train.steps=3", "optim.grad_accum=2", "data.image_ratio=0.5", "optim.ema_decay=0.9")


def _dp_worker(manifest: str, out: str, overrides: tuple[str, ...]) -> dict[str, np.ndarray]:
    """One msrun rank of a data-parallel tae-train run; returns the final weights it sees on disk."""
    from mg_train.runtime import setup_mindspore

    setup_mindspore()
    cfg = load_config(
        TAETrainConfig,
        None,
        [
            MICRO,
            f"data.manifest={manifest}",
            "data.frames=4",
            "data.size=[16, 16]",
            f"train.output_dir={out}",
            "train.jit=false",
            "optim.lr=1e-3",
            *overrides,
        ],
    )
    final = tae_train.run(cfg)
    return load_file(str(final / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.multiprocess
def test_two_data_parallel_ranks_match_one_process_with_the_double_batch(synth, tmp_path):
    from mg_parallel.testing import run_distributed

    single = _dp_worker(
        str(synth.train_manifest), str(tmp_path / "single"), ("data.batch_size=2", *DP_RECIPE)
    )
    ranks = run_distributed(
        f"{__file__}:_dp_worker",
        2,
        args=(str(synth.train_manifest), str(tmp_path / "dp"), ("data.batch_size=1", *DP_RECIPE)),
        timeout=600,
    )
    for weights in ranks:
        for key, value in single.items():
            np.testing.assert_allclose(weights[key], value, rtol=0, atol=1e-5, err_msg=key)
    single_loss = [m["loss"] for m in _metrics(tmp_path / "single") if "loss" in m]
    dp_loss = [m["loss"] for m in _metrics(tmp_path / "dp") if "loss" in m]
    np.testing.assert_allclose(dp_loss, single_loss, rtol=1e-5)


def _window_position(clip: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """(top, left) of the one window of clip (C, T, H, W) equal to crop on every frame, found by search."""
    height, width = crop.shape[-2:]
    found = [
        (top, left)
        for top in range(clip.shape[2] - height + 1)
        for left in range(clip.shape[3] - width + 1)
        if np.array_equal(clip[:, :, top : top + height, left : left + width], crop)
    ]
    assert len(found) == 1, found
    return found[0]


def test_random_crops_are_windows_of_each_clip_and_shard_like_the_global_batch():
    from types import SimpleNamespace

    video = np.random.default_rng(0).standard_normal((4, 3, 2, 12, 10)).astype(np.float32)

    def crops(rank, world):
        ctx = SimpleNamespace(data_rank=rank, data_world=world)
        rows = video.shape[0] // world
        return tae_train.random_crops(
            video[rank * rows : (rank + 1) * rows], (8, 6), np.random.default_rng(5), ctx
        )

    whole = crops(0, 1)
    assert whole.shape == (4, 3, 2, 8, 6)
    positions = [_window_position(clip, crop) for clip, crop in zip(video, whole, strict=True)]
    assert len(set(positions)) > 1  # drawn per clip
    # two ranks holding two rows each cut the windows the one-process run cuts for those rows
    np.testing.assert_array_equal(np.concatenate([crops(0, 2), crops(1, 2)]), whole)


def test_crops_cut_videos_while_images_train_whole():
    from types import SimpleNamespace

    ctx = SimpleNamespace(data_rank=0, data_world=1)
    model = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
    video = np.random.default_rng(1).standard_normal((2, 3, 8, 16, 16)).astype(np.float32)
    kinds = set()
    for step in range(12):
        pixels, noise = tae_train.micro_batch(video, model, 0, step, 0, ctx, 0.5, True, crop=(8, 8))
        if pixels.shape[2] == 1:  # a frame of each clip, whole
            assert pixels.shape == (2, 3, 1, 16, 16) and noise.shape == (2, 16, 1, 2, 2)
            for clip, frame in zip(video, pixels, strict=True):
                assert any(np.array_equal(clip[:, t], frame[:, 0]) for t in range(8))
        else:
            assert pixels.shape == (2, 3, 8, 8, 8) and noise.shape == (2, 16, 1, 1, 1)
        kinds.add(pixels.shape[2])
    assert kinds == {1, 8}


def test_training_on_crops_runs_and_keeps_full_size_evaluation(synth, tmp_path):
    out = tmp_path / "crop"
    final = tae_train.run(_config(synth, out, "data.crop=[8, 8]", "train.steps=2"))
    model = TemporalAutoencoder.from_pretrained(final)
    x = np.zeros((1, 3, 4, 16, 16), np.float32)
    assert model.decode(model.encode(Tensor(x)).mode(), num_frames=4).shape == x.shape


def test_calibrated_latents_have_zero_mean_and_unit_variance(synth, tmp_path):
    from mg_data import VideoDataset

    final = tae_train.run(_config(synth, tmp_path / "cal", "train.steps=1", "calibrate_latents=3"))
    model = TemporalAutoencoder.from_pretrained(final)
    assert (model.config.scaling_factor, model.config.shift_factor) != (1.5305, 0.0609)  # the preset's
    clips = VideoDataset(synth.train_manifest, None, num_frames=4, size=(16, 16), start="center", seed=0)
    batch = np.stack([clips[i]["video"] for i in range(3)])
    scaled = model.scale_latents(model.encode(Tensor(batch)).mean).asnumpy().astype(np.float64)
    assert abs(scaled.mean()) < 1e-4
    assert scaled.std() == pytest.approx(1.0, abs=1e-4)


def test_export_of_a_tae_checkpoint_is_the_runs_own_tae_folder(continuous, tmp_path):
    """`mg-train export` writes a TAE checkpoint in mg-tae's model-folder format (through mg-tae's writer):
    the same files, metadata and tensors as the run's final `tae` folder (EMA weights, no calibration here)."""
    from safetensors import safe_open

    from mg_train.export import export_model

    out, final = continuous
    exported = export_model(out, tmp_path / "exported")
    assert sorted(p.name for p in exported.iterdir()) == sorted(p.name for p in final.iterdir())
    assert json.loads((exported / "config.json").read_text()) == json.loads(
        (final / "config.json").read_text()
    )
    for folder in (exported, final):
        with safe_open(str(folder / "model.safetensors"), "np") as handle:
            assert handle.metadata() == {"format": "mg-tae"}
    a, b = load_file(str(final / "model.safetensors")), load_file(str(exported / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)
    TemporalAutoencoder.from_pretrained(exported)  # loads strictly
