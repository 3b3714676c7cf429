"""`mg-train train` in one process: the loss falls, inputs reach the model as they should (checked against an
independent computation of the first step's loss), non-finite steps are skipped and counted, stage 1 -> 2
initialisation resizes the position tables, the pipeline folder loads and samples, bad configs fail before any
work, and every bundled transformer config validates.

The inputs (`make_training_data`) and the run config (`transformer_train_config`) come from `mg_train.testing`,
shared with test_resume_transformer.py and test_parallel_transformer.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from mg_data import load_manifest
from mg_data.caches import cache_key
from mg_tae import TAEConfig, TemporalAutoencoder
from mg_train import draws
from mg_train.checkpoint import load_checkpoint
from mg_train.config.loader import ConfigError, bundled_configs, load_config, to_dict
from mg_train.config.schema import TransformerTrainConfig
from mg_train.testing import TINY_MODEL, final_weights, run_metrics
from mg_train.testing import transformer_train_config as train_config
from mg_train.transformer_train import check_inputs, preset_config, run, training_buckets
from mg_transformer import TransformerConfig

# The Movie Gen shapes: TAE 8x in time and space, 2x2 spatial patches -> sizes in multiples of 16.
COMPRESSION = (TAEConfig().temporal_compression, TAEConfig().spatial_compression)
MULTIPLE = COMPRESSION[1] * TransformerConfig.preset("tiny").patch_size[1]
weights, metrics = final_weights, run_metrics


@pytest.fixture(scope="module")
def data(transformer_data):
    return transformer_data


@pytest.fixture(scope="module")
def eager_run(data, tmp_path_factory):
    """2 steps of the default test config, eager, checkpoints after each step (shared by several tests)."""
    out = tmp_path_factory.mktemp("eager") / "run"
    run(train_config(data, out, train={"steps": 2, "save_every": 1}))
    return out


@pytest.fixture(scope="module")
def ema_run(data, tmp_path_factory):
    """2 steps with EMA (decay 0.5)."""
    out = tmp_path_factory.mktemp("ema") / "run"
    run(train_config(data, out, optim={"ema_decay": 0.5}, train={"steps": 2}))
    return out


# -- training works ----------------------------------------------------------------------------------------------


def test_first_step_loss_matches_an_independent_computation(data, tmp_path):
    """The fresh model predicts zero velocity (zero-initialised output projection), so the first step's loss is
    mean((x0 - (1 - sigma_min) * noise)^2) for the scaled latents of the first batch and the step's noise: this
    checks sampler order, cache reading, scaling and the noise draw against numpy."""
    cfg = train_config(data, tmp_path / "run", train={"steps": 1}, flow={"text_dropout": 0.0})
    run(cfg)
    from mg_data import BucketBatchSampler, VideoDataset

    dataset = VideoDataset(
        data.train,
        latent_cache=data.latents,
        buckets=training_buckets(cfg.data, MULTIPLE),
        seed=cfg.train.seed,
    )
    sampler = BucketBatchSampler(dataset.assignment, seed=cfg.train.seed)
    first = next(iter(sampler))
    z = np.stack([dataset.get(i, epoch=0)["latent"] for i in first])
    x0 = (z - np.float32(data.shift)) * np.float32(data.scaling)
    noise = draws.step_rng(cfg.train.seed, 0, 0, 1).standard_normal(z.shape, dtype=np.float32)
    expected = np.mean((x0.astype(np.float64) - (1 - 1e-5) * noise) ** 2)
    assert metrics(tmp_path / "run")[0]["loss"] == pytest.approx(expected, rel=1e-5)


def test_training_lowers_the_validation_loss(data, tmp_path):
    """20 steps on the training clips: the validation loss (fixed t and noise) on the same clips falls by more
    than 10% from the untrained model's, which the run logs at step 0."""
    cfg = train_config(
        data,
        tmp_path / "run",
        data={
            "manifest": data.train,
            "val_manifest": data.train,
            "frames": 16,
            "size": [32, 32],
            "batch_size": 2,
        },
        optim={"lr": 2e-2, "warmup_steps": 2},
        train={"steps": 20, "val_every": 20, "val_batches": 4},
    )
    run(cfg)
    val = {m["step"]: m["val_loss"] for m in metrics(tmp_path / "run") if "val_loss" in m}
    assert sorted(val) == [0, 20]
    assert val[20] < 0.9 * val[0], val
    steps = [m for m in metrics(tmp_path / "run") if "loss" in m]
    assert [m["step"] for m in steps] == list(range(1, 21)) and not any(m["skipped"] for m in steps)


def test_duration_buckets_train_both_lengths_and_resume_exactly(data, tmp_path):
    """data.durations {8: 2, 16: 2} on a latent cache where half the clips hold one latent frame (8 frames) and
    half two (16 frames): both buckets train, and a resumed run equals the continuous one."""
    import shutil

    cache = tmp_path / "latents"
    shutil.copytree(data.latents, cache)
    rows = load_manifest(data.train).rows
    for row in rows[::2]:  # every other clip: its first latent frame only
        path = cache / cache_key(row.video)
        with np.load(path) as entry:
            arrays = {k: v[:, :1] for k, v in entry.items()}
        np.savez(path, **arrays)
    recipe = {
        "latent_cache": str(cache),
        "data": {"manifest": data.train, "frames": 16, "size": [32, 32], "durations": {8: 2, 16: 2}},
    }
    run(train_config(data, tmp_path / "straight", train={"steps": 5}, **recipe))
    run(train_config(data, tmp_path / "resumed", train={"steps": 3, "save_every": 3}, **recipe))
    run(train_config(data, tmp_path / "resumed", train={"steps": 5}, **recipe))
    straight = [m for m in metrics(tmp_path / "straight") if "loss" in m]
    resumed = [m for m in metrics(tmp_path / "resumed") if "loss" in m]
    assert {m["latent_frames"] for m in straight} == {1, 2}
    assert [m["latent_frames"] for m in resumed] == [m["latent_frames"] for m in straight]
    np.testing.assert_allclose([m["loss"] for m in resumed], [m["loss"] for m in straight], rtol=1e-5)
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "resumed")
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-6, err_msg=key)


def test_pixels_through_the_frozen_tae(data, tmp_path):
    """Without a latent cache the clips are encoded by the TAE: the first step's loss equals numpy's on the
    TAE posterior sample (posterior noise from the step's generator, stream 2) of the first batch's clips."""
    cfg = train_config(
        data,
        tmp_path / "run",
        latent_cache=None,
        tae=data.tae,
        train={"steps": 1},
        flow={"text_dropout": 0.0},
    )
    run(cfg)
    from mindspore import Tensor

    from mg_data import BucketBatchSampler, VideoDataset

    dataset = VideoDataset(
        data.train, num_frames=16, size=(32, 32), buckets=training_buckets(cfg.data, MULTIPLE), seed=3
    )
    first = next(iter(BucketBatchSampler(dataset.assignment, seed=3)))
    video = np.stack([dataset.get(i, epoch=0)["video"] for i in first])
    tae = TemporalAutoencoder.from_pretrained(data.tae)
    posterior = tae.encode(Tensor(video))
    mean, std = posterior.mean.asnumpy(), posterior.std.asnumpy()
    eps = draws.step_rng(3, 0, 0, 2).standard_normal(mean.shape, dtype=np.float32)
    x0 = ((mean + std * eps) - data.shift) * data.scaling
    noise = draws.step_rng(3, 0, 0, 1).standard_normal(mean.shape, dtype=np.float32)
    expected = np.mean((x0.astype(np.float64) - (1 - 1e-5) * noise) ** 2)
    assert metrics(tmp_path / "run")[0]["loss"] == pytest.approx(expected, rel=1e-4)


def test_online_text_equals_the_text_cache(data, tmp_path):
    """Embedding captions on the fly with the tiny encoders trains exactly like reading the cache they wrote."""
    online = train_config(
        data,
        tmp_path / "online",
        text_cache=None,
        text={"encoders": {n: "tiny" for n in ("ul2", "byt5", "metaclip")}},
        train={"steps": 2},
    )
    cached = train_config(data, tmp_path / "cached", train={"steps": 2})
    run(online)
    run(cached)
    a, b = weights(tmp_path / "online"), weights(tmp_path / "cached")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)
    assert any(not np.allclose(a[k], weights_at_init()[k]) for k in a)  # it did train


def test_jit_training_equals_eager(data, tmp_path):
    """`train.jit` compiles forward+backward (and the validation forward), and here the optimizer step: same
    weights and gradient norms as eager, with clipping at work (norms above optim.grad_clip)."""
    runs = {}
    for jit in (False, True):
        runs[jit] = tmp_path / f"jit_{jit}"
        train = {"steps": 2, "jit": jit, "jit_min_steps": 0, "jit_optimizer_min_steps": 0}  # all compiled
        run(train_config(data, runs[jit], optim={"grad_clip": 0.3}, train=train))
    a, b = weights(runs[True]), weights(runs[False])
    for key in b:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=2e-6, err_msg=key)
    norms = [m["grad_norm"] for m in metrics(runs[True]) if "grad_norm" in m]
    assert norms == pytest.approx(
        [m["grad_norm"] for m in metrics(runs[False]) if "grad_norm" in m], rel=1e-5
    )
    assert min(norms) > 0.3


def test_jit_ema_equals_eager(data, ema_run, tmp_path):
    """The compiled EMA update exports the same averaged weights as the eager one."""
    train = {"steps": 2, "jit": True, "jit_min_steps": 0}
    run(train_config(data, tmp_path / "jit", optim={"ema_decay": 0.5}, train=train))
    a, b = weights(tmp_path / "jit"), weights(ema_run)
    for key in b:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=2e-6, err_msg=key)


def test_runs_shorter_than_jit_min_steps_run_eagerly(data, tmp_path, capfd, monkeypatch):
    """A 2-step debug run with `train.jit` on skips compiling (it would cost more than it saves) and says so."""
    from mg_train import engine

    asked: list[
        bool
    ] = []  # the jit flag of every step function the run builds (forward+backward, validation)
    real = engine.compile_fn
    monkeypatch.setattr(engine, "compile_fn", lambda fn, jit: asked.append(jit) or real(fn, jit))
    cfg = train_config(data, tmp_path / "short", train={"steps": 2, "jit": True})
    assert cfg.train.jit_min_steps > 2 and not cfg.train.compiles_step
    run(cfg)
    assert asked and not any(asked)
    out = capfd.readouterr().out
    assert f"running eagerly: 2 steps < train.jit_min_steps={cfg.train.jit_min_steps}" in out
    always = dataclasses.replace(cfg.train, jit_min_steps=0)
    assert always.compiles_step and not always.compiles_optimizer
    assert dataclasses.replace(always, jit_optimizer_min_steps=2).compiles_optimizer
    assert not dataclasses.replace(always, jit=False).compiles_step


def test_gradient_checkpointing_trains_the_same(data, eager_run, tmp_path):
    run(train_config(data, tmp_path / "ckpt", train={"steps": 2, "gradient_checkpointing": True}))
    a, b = weights(tmp_path / "ckpt"), weights(eager_run)
    for key in b:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6, err_msg=key)


def weights_at_init(seed: int = 3, overrides: dict | None = None) -> dict[str, np.ndarray]:
    """The model a fresh run starts from (seeded init of the tiny preset), built without the training loop."""
    import mindspore as ms

    from mg_transformer import MovieGenTransformer

    ms.set_seed(seed)
    dims = {"ul2": 64, "byt5": 48, "metaclip": 32}
    config = TransformerConfig.preset("tiny", text_dims=dims, **(overrides or TINY_MODEL))
    return {name: p.asnumpy() for name, p in MovieGenTransformer(config).parameters_and_names()}


def test_each_step_applies_adamw_with_the_scheduled_lr(data, tmp_path):
    """Every update equals AdamW's formula (bias-corrected moments from the checkpoint, decoupled weight decay
    on matrices only) at the logged learning rate, which warms up 1e-3, 2e-3, 3e-3."""
    from mg_train.checkpoint import load_checkpoint
    from mg_train.optim import decay_groups

    cfg = train_config(
        data,
        tmp_path / "run",
        optim={"lr": 3e-3, "warmup_steps": 3, "weight_decay": 0.1, "eps": 1e-8, "grad_clip": None},
        train={"steps": 3, "save_every": 1},
    )
    run(cfg)
    lrs = [m["lr"] for m in metrics(tmp_path / "run") if "loss" in m]
    assert lrs == pytest.approx([1e-3, 2e-3, 3e-3])
    previous = weights_at_init()
    checked = 0
    for step, lr in enumerate(lrs, start=1):
        arrays, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / f"step_{step:08d}")
        for name, new in arrays["model"].items():
            m, v = arrays["optimizer"][f"exp_avg.{name}"], arrays["optimizer"][f"exp_avg_sq.{name}"]
            decay = decay_groups([_Named(name, new.ndim)], 0.1)[0]["weight_decay"]  # 0 for norms, tables
            expected = previous[name] * (1 - lr * decay) - lr / (1 - 0.9**step) * m / (
                np.sqrt(v) / np.sqrt(1 - 0.999**step) + 1e-8
            )
            np.testing.assert_allclose(new, expected, rtol=0, atol=2e-6, err_msg=f"step {step}: {name}")
            checked += int(np.abs(new - previous[name]).max() > 1e-4)
        previous = arrays["model"]
    assert checked > 20  # most tensors moved


class _Named:
    """A stand-in parameter for `decay_groups` (name and rank only)."""

    def __init__(self, name: str, ndim: int):
        self.name, self.ndim = name, ndim


# -- non-finite steps ----------------------------------------------------------------------------------------------


def corrupt_text(text_cache: str, keys: list[str], target: Path) -> str:
    """A copy of the text cache whose UL2 embeddings of `keys` are NaN."""
    import shutil

    shutil.copytree(text_cache, target)
    for key in keys:
        path = target / "ul2" / key
        with np.load(path) as entry:
            arrays = dict(entry)
        arrays["text_emb"] = np.full_like(arrays["text_emb"], np.nan)
        np.savez(path, **arrays)
    return str(target)


def test_nonfinite_steps_are_skipped_and_counted(data, tmp_path):
    from mg_data import BucketBatchSampler, VideoDataset

    bad_row = 2
    key = cache_key(load_manifest(data.train).rows[bad_row].video)
    text = corrupt_text(data.text, [key], tmp_path / "text")
    cfg = train_config(
        data, tmp_path / "run", text_cache=text, flow={"text_dropout": 0.0}, train={"steps": 6}
    )
    run(cfg)
    # Which steps hold the bad sample, from the sampler alone.
    dataset = VideoDataset(
        data.train, latent_cache=data.latents, buckets=training_buckets(cfg.data, MULTIPLE), seed=3
    )
    sampler = BucketBatchSampler(dataset.assignment, seed=3)
    batches, order = iter(sampler), []
    while len(order) < 6:
        try:
            order.append(next(batches))
        except StopIteration:
            batches = iter(sampler)
    expected = [step + 1 for step, batch in enumerate(order) if bad_row in batch]
    assert expected, "the bad sample must appear in the run"
    rows = [m for m in metrics(tmp_path / "run") if "loss" in m]
    assert [m["step"] for m in rows if m["skipped"]] == expected
    assert all(math.isfinite(m["loss"]) for m in rows if not m["skipped"])
    state = json.loads((tmp_path / "run" / "checkpoints" / "step_00000006" / "state.json").read_text())
    assert state["optimizer_step"]["skipped_total"] == len(expected)
    assert all(np.isfinite(v).all() for v in weights(tmp_path / "run").values())


def test_repeated_nonfinite_steps_stop_the_run_without_saving_them(data, tmp_path):
    from mg_train.optim import NonFiniteLossError

    keys = [cache_key(row.video) for row in load_manifest(data.train).rows]
    text = corrupt_text(data.text, keys, tmp_path / "text")
    cfg = train_config(
        data,
        tmp_path / "run",
        text_cache=text,
        flow={"text_dropout": 0.0},
        train={"steps": 6, "save_every": 1, "max_nonfinite_steps": 2},
    )
    with pytest.raises(NonFiniteLossError, match="2 consecutive steps"):
        run(cfg)
    saved = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert saved == [
        "step_00000001"
    ]  # the skipped first step changed nothing; the second raised before saving
    assert not (tmp_path / "run" / "transformer").exists()
    kept = load_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000001")[0]["model"]
    initial = weights_at_init()
    for name, value in kept.items():
        np.testing.assert_array_equal(value, initial[name], err_msg=name)


# -- stages and the pipeline ---------------------------------------------------------------------------------------


def test_stage1_images_initialise_stage2_with_resized_position_tables(data, tmp_path):
    """Stage 1 trains on images (frames 1, tables (1, 2, 2)); stage 2 starts from it with tables (2, 4, 4): the
    tables are the stage-1 ones linearly interpolated per column (numpy), every other weight is unchanged."""
    stage1 = train_config(
        data,
        tmp_path / "stage1",
        model={"preset": "tiny", "overrides": {**TINY_MODEL, "pos_embed_max_size": [1, 2, 2]}},
        data={"manifest": data.train, "frames": 1, "size": [32, 32], "batch_size": 2},
        train={"steps": 2},
    )
    run(stage1)
    stage2 = train_config(
        data,
        tmp_path / "stage2",
        model={
            "preset": "tiny",
            "init_from": str(tmp_path / "stage1"),
            "overrides": {"pos_embed_max_size": [2, 4, 4]},
        },
        optim={"lr": 0.0},
        train={"steps": 1},
    )
    run(stage2)
    before, after = weights(tmp_path / "stage1"), weights(tmp_path / "stage2")
    for name, length in (("pos_embed_t", 2), ("pos_embed_h", 4), ("pos_embed_w", 4)):
        old = before[name]
        grid = np.linspace(0, old.shape[0] - 1, length)
        expected = np.stack(
            [np.interp(grid, np.arange(old.shape[0]), old[:, c]) for c in range(old.shape[1])], 1
        )
        np.testing.assert_allclose(after[name], expected, rtol=0, atol=1e-6, err_msg=name)
    for name in before.keys() - {"pos_embed_t", "pos_embed_h", "pos_embed_w"}:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    config = json.loads((tmp_path / "stage2" / "transformer" / "config.json").read_text())
    assert config["pos_embed_max_size"] == [2, 4, 4] and config["num_layers"] == TINY_MODEL["num_layers"]


def test_pipeline_folder_loads_and_samples(data, ema_run):
    """The run's pipeline/ (TAE named by the latent cache, encoders by the text cache) loads, samples the training
    size, holds the final transformer, and rebuilds the text encoders that wrote the cache."""
    from mg_data.caches import TextEmbeddingStore
    from mg_train.pipeline import MovieGenPipeline

    pipe = MovieGenPipeline.from_pretrained(ema_run, jit=False)
    captions = {row.caption for row in load_manifest(data.train).rows}
    assert (pipe.info.frames, pipe.info.size, pipe.info.fps) == (16, (32, 32), 8.0)
    assert pipe.info.example_prompts and set(pipe.info.example_prompts) <= captions
    final = weights(ema_run)
    for name, param in pipe.transformer.parameters_and_names():
        np.testing.assert_array_equal(param.asnumpy(), final[name], err_msg=name)
    caption = pipe.info.example_prompts[0]
    row = next(r for r in load_manifest(data.train).rows if r.caption == caption)
    cached = TextEmbeddingStore(data.text).get(cache_key(row.video))
    for name, (emb, mask) in pipe.text.embed([caption]).items():
        np.testing.assert_array_equal(mask[0], cached[name][1], err_msg=name)
        np.testing.assert_allclose(emb[0], cached[name][0], rtol=0, atol=1e-5, err_msg=name)
    video = pipe.generate([caption], steps=2, seed=0)
    assert video.shape == (1, 16, 32, 32, 3) and video.dtype == np.uint8


def test_ema_weights_are_exported(ema_run, eager_run):
    """With EMA on, transformer/ holds the average 0.25 w0 + 0.25 w1 + 0.5 w2 of the raw weights, which the
    checkpoint also keeps (w1 and w2 from the same run without EMA, w0 = the initial weights)."""
    from mg_train.checkpoint import load_checkpoint

    arrays, _ = load_checkpoint(ema_run / "checkpoints" / "step_00000002")
    exported = weights(ema_run)
    assert exported.keys() == arrays["ema"].keys() == arrays["model"].keys()
    w0 = weights_at_init(seed=3)
    w1 = load_checkpoint(eager_run / "checkpoints" / "step_00000001")[0]["model"]
    w2 = load_checkpoint(eager_run / "checkpoints" / "step_00000002")[0]["model"]
    for name, value in exported.items():
        np.testing.assert_array_equal(value, arrays["ema"][name], err_msg=name)
        np.testing.assert_array_equal(
            arrays["model"][name], w2[name], err_msg=name
        )  # EMA leaves training alone
        expected = 0.25 * w0[name] + 0.25 * w1[name] + 0.5 * w2[name]
        np.testing.assert_allclose(value, expected, rtol=0, atol=1e-7, err_msg=name)
    assert not np.allclose(exported["proj_out.weight"], w2["proj_out.weight"])


# -- checks before any work ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"manifest": "/no/such.csv"}}, "data.manifest=/no/such.csv: no such file"),
        ({"latent_cache": None}, "set latent_cache"),
        ({"latent_cache": "/no/cache"}, "latent_cache=/no/cache"),
        ({"text_cache": "/no/text"}, "text_cache=/no/text"),
        ({"tae": "/no/tae"}, "tae=/no/tae"),
        (
            {"parallel": {"sp": 2}},
            r"parallel.tp=1 x parallel.cp=1 x parallel.sp=2 = 2 must divide the world size",
        ),
        ({"parallel": {"dp": 2}}, r"parallel.dp=2 x .* = 2 processes, but this job has 1"),
        ({"parallel": {"tp": 0}}, "parallel.tp=0: must be >= 1"),
        ({"data": {"size": [40, 32]}}, "multiples of 16"),
        ({"data": {"size": [32, 64]}}, "not among the bucket sizes"),
        ({"model": {"init_from": "/no/run"}}, "model.init_from"),
        ({"model": {"overrides": {"text_dims": {"ul2": 8}}}}, "text_dims"),
        ({"model": {"overrides": {**TINY_MODEL, "pos_embed_max_size": [1, 4, 4]}}}, "pos_embed_max_size"),
        ({"train": {"val_every": 5}}, "needs data.val_manifest"),
        ({"train": {"resume": "/no/ckpt"}}, "train.resume=/no/ckpt"),
        ({"data": {"cache_memory_mb": -1}}, "data.cache_memory_mb=-1.0: must be >= 0"),
        ({"optim": {"grad_accum": 0}}, "optim.grad_accum=0: must be >= 1"),
        ({"flow": {"text_dropout": 1.5}}, r"flow.text_dropout=1.5: must be in \[0, 1\]"),
        ({"data": {"crop": [16, 16]}}, "crops are for tae-train only"),
    ],
)
def test_bad_configs_fail_before_any_work(data, tmp_path, change, message):
    sections = {k: v for k, v in change.items() if k not in ("data",)}
    if "data" in change:
        sections["data"] = {
            "manifest": data.train,
            "frames": 16,
            "size": [32, 32],
            "batch_size": 2,
            **change["data"],
        }
    cfg = train_config(data, tmp_path / "run", **sections)
    with pytest.raises(ConfigError, match=message):
        run(cfg)
    assert not (tmp_path / "run").exists()


def test_every_bundled_transformer_config_validates():
    """Each bundled config loads, its buckets build, and its model fits them (position tables, heads and tokens
    divisible by sp); the stage recipes follow the reference."""
    from mg_train.transformer_train import check_model_fits
    from mg_transformer.config import REAL_TEXT_DIMS

    names = [n for n in bundled_configs() if n.startswith("transformer/")]
    assert {
        f"transformer/stage{s}_{size}"
        for s in ("1_t2i_256px", "2_t2iv_256px", "3_t2iv_768px")
        for size in ("tiny", "1B", "5B", "30B")
    } <= set(names)
    assert "transformer/cpu_debug" in names
    for name in names:
        cfg = load_config(TransformerTrainConfig, name)
        buckets = training_buckets(cfg.data, MULTIPLE)
        dims = REAL_TEXT_DIMS if cfg.model.preset != "tiny" else {"ul2": 64, "byt5": 48, "metaclip": 32}
        config = TransformerConfig.preset(cfg.model.preset, text_dims=dims, **cfg.model.overrides)
        degrees = {"cp": cfg.parallel.cp, "sp": cfg.parallel.sp, "tp": cfg.parallel.tp}
        check_model_fits(config, buckets, COMPRESSION, degrees, name, cfg.parallel.tp_sequence_parallel)
        assert to_dict(cfg)  # round-trips to YAML data
        if "stage" in name:
            assert (cfg.optim.lr, cfg.optim.warmup_steps, cfg.optim.eps) == (1e-4, 1000, 1e-15), name
            assert (cfg.optim.grad_clip, cfg.optim.plateau_factor, cfg.flow.text_dropout) == (
                1.0,
                0.5,
                0.2,
            ), name
            assert (cfg.model.init_from is None) == ("stage1" in name), name
    for stage, cards in (("stage2_t2iv_256px", 16), ("stage3_t2iv_768px", 32)):
        cfg = load_config(TransformerTrainConfig, f"transformer/{stage}_30B")
        assert (cfg.model.preset, cfg.parallel.zero_stage) == ("30B", 3)
        assert {k: v for k, v in cfg.parallel.degrees(cards).items() if k != "dp"} == {
            "cp": 2,
            "sp": 4,
            "tp": 2,
        }


def test_every_multi_card_config_names_the_card_count_its_layout_is_for():
    """The 5B and 30B stage configs say in a comment which card count their layout is for, and their layout
    splits exactly that many processes."""
    import re

    from mg_train.config.loader import BUNDLED_DIR

    for name in bundled_configs():
        if not re.search(r"stage\d_.*_(5B|30B)$", name):
            continue
        found = re.search(r"Layout for (\d+) cards", (BUNDLED_DIR / f"{name}.yaml").read_text())
        assert found, f"{name}: no 'Layout for N cards' comment"
        cfg = load_config(TransformerTrainConfig, name)
        degrees = cfg.parallel.degrees(int(found.group(1)))
        assert degrees["dp"] >= 1, name


def test_bundled_stage3_5b_is_576x1024():
    assert load_config(TransformerTrainConfig, "transformer/stage3_t2iv_768px_5B").data.size == (576, 1024)


def test_preset_config_takes_the_text_and_latent_widths(data, tmp_path):
    cfg = train_config(data, tmp_path / "run")
    config = preset_config(cfg, {"ul2": 64, "byt5": 48}, 8)
    assert dict(config.text_dims) == {"ul2": 64, "byt5": 48} and (
        config.in_channels,
        config.out_channels,
    ) == (8, 8)
    check_inputs(cfg)  # the fixture's config itself is fine


def test_export_writes_the_checkpoint_model_as_a_model_folder(ema_run, tmp_path):
    """`mg-train export` rebuilds the model folder from the last checkpoint: EMA weights by default (equal to the
    run's own transformer/), the trained weights with weights=raw; the folder loads with from_pretrained."""
    from mg_train.cli import main
    from mg_transformer import MovieGenTransformer

    assert main(["export", f"checkpoint={ema_run}", f"output_dir={tmp_path / 'ema'}"]) == 0
    assert (
        main(
            [
                "export",
                f"checkpoint={ema_run / 'checkpoints'}/step_00000002",
                f"output_dir={tmp_path / 'raw'}",
                "weights=raw",
            ]
        )
        == 0
    )
    exported, run_weights = weights(tmp_path, "ema"), weights(ema_run)
    assert exported.keys() == run_weights.keys()
    for name in run_weights:
        np.testing.assert_array_equal(exported[name], run_weights[name], err_msg=name)
    raw = load_checkpoint(ema_run / "checkpoints" / "step_00000002")[0]["model"]
    for name, value in weights(tmp_path, "raw").items():
        np.testing.assert_array_equal(value, raw[name], err_msg=name)
    model = MovieGenTransformer.from_pretrained(tmp_path / "raw")
    assert (
        model.config.to_dict()
        == TransformerConfig.from_json(ema_run / "transformer" / "config.json").to_dict()
    )
    assert main(["export", f"checkpoint={tmp_path / 'nothing'}", f"output_dir={tmp_path / 'x'}"]) == 2
