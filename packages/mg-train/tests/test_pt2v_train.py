"""PT2V (personalised Movie Gen) on the one engine: stage 1 from a T2V run trains the transformer and the new
projection but not the frozen vision tower (nor gives it optimizer state); with every reference dropped it
trains exactly like T2V; stage 3 continues from stage 1 (equal at lr 0) and trains the vision tower; the
exported pipeline samples with a reference (without one it is the T2V model), through `mg-train sample
--reference` too; `mg-train export` of a PT2V checkpoint writes the same folder; bad settings are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from mg_data import load_manifest, read_image
from mg_train.checkpoint import CheckpointManager
from mg_train.cli import main
from mg_train.config.loader import ConfigError
from mg_train.export import export_model
from mg_train.pipeline import MovieGenPipeline, RequestError
from mg_train.testing import make_training_data
from mg_train.testing import transformer_train_config as train_config
from mg_train.transformer_train import run
from mg_transformer.personalized import PROJECTION_FILE
from mg_transformer.vision import CLIPVisionEncoder


def weights(folder: Path, name: str = "model.safetensors") -> dict[str, np.ndarray]:
    return load_file(str(folder / name))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(tmp_path_factory.mktemp("pt2v_data"), n=8, personalization=True)


@pytest.fixture(scope="module")
def t2v_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("t2v") / "run"
    run(train_config(data, out, train={"steps": 2}))
    return out


def pt2v_config(data, out: Path, init_from: Path, **sections):
    model = {"preset": "tiny", "overrides": {}, "init_from": str(init_from)}
    return train_config(data, out, model=model, **sections)


@pytest.fixture(scope="module")
def stage1(data, t2v_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1") / "run"
    run(pt2v_config(data, out, t2v_run, reference={"vision": "tiny", "seed": 5}, train={"steps": 3}))
    return out


def test_stage1_trains_the_transformer_and_projection_but_not_the_frozen_vision_tower(stage1, t2v_run):
    pt2v = stage1 / "pt2v"
    tiny = CLIPVisionEncoder.from_source("tiny", seed=5)
    trained_vision = weights(pt2v / "vision")
    for ours, hf in tiny.hf_names().items():  # frozen: exactly the named encoder's weights
        expected = dict(tiny.parameters_and_names())[ours].asnumpy()
        np.testing.assert_array_equal(trained_vision[hf], expected)
    start = weights(t2v_run / "transformer")
    trained = weights(pt2v / "transformer")
    assert set(trained) == set(start)
    moved = [n for n in start if not np.array_equal(start[n], trained[n])]
    assert len(moved) > len(start) // 2, "the transformer did not train"
    projection = weights(pt2v, PROJECTION_FILE)
    assert float(np.abs(projection["linear.weight"]).max()) > 0
    # the frozen tower has no optimizer state (not in the optimizer), the projection has
    checkpoint = CheckpointManager(stage1 / "checkpoints").latest()
    tensors = json.loads((checkpoint / "manifest.json").read_text())["tensors"]
    assert {n for n in tensors["model"] if n.startswith("vision.")}
    assert not [n for n in tensors["optimizer"] if ".vision." in n]
    assert "exp_avg.reference_projection.linear.weight" in tensors["optimizer"]


def test_with_every_reference_dropped_pt2v_trains_exactly_like_t2v(data, t2v_run, tmp_path):
    """Masked reference tokens take no attention, so the transformer's gradients are T2V's and the projection's
    are zero: the same draws (the reference dropout has its own stream) give the same weights."""
    t2v = tmp_path / "t2v"
    run(pt2v_config(data, t2v, t2v_run, train={"steps": 3}))
    pt2v = tmp_path / "pt2v"
    run(pt2v_config(data, pt2v, t2v_run, reference={"vision": "tiny", "dropout": 1.0}, train={"steps": 3}))
    expected = weights(t2v / "transformer")
    got = weights(pt2v / "pt2v" / "transformer")
    assert set(got) == set(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.array_equal(
        expected["proj_out.weight"], weights(t2v_run / "transformer")["proj_out.weight"]
    )


def test_stage3_starts_from_stage1_and_trains_the_vision_tower(data, stage1, tmp_path):
    reference = {"columns": ["cross_reference"], "train_vision": True}
    same = tmp_path / "lr0"
    run(pt2v_config(data, same, stage1, reference=reference, optim={"lr": 0.0}, train={"steps": 1}))
    for part, name in (
        ("transformer", "model.safetensors"),
        ("vision", "model.safetensors"),
        (".", PROJECTION_FILE),
    ):
        before, after = weights(stage1 / "pt2v" / part, name), weights(same / "pt2v" / part, name)
        for key in before:
            np.testing.assert_array_equal(after[key], before[key], err_msg=f"{part}/{key}")
    out = tmp_path / "stage3"
    run(pt2v_config(data, out, stage1, reference=reference, train={"steps": 2}))
    before, after = weights(stage1 / "pt2v" / "vision"), weights(out / "pt2v" / "vision")
    moved = [k for k in before if not np.array_equal(before[k], after[k])]
    assert len(moved) > len(before) // 2, "stage 3 did not train the vision tower"


def test_vision_lr_scale_moves_the_tower_by_that_share_of_the_step_and_the_rest_as_before(
    data, stage1, tmp_path
):
    """One AdamW step moves each weight by lr x (its own bias-corrected ratio): with the same gradients, a tower
    at 0.25 x the LR moves exactly a quarter as far, and the transformer exactly as far, as with no scale."""
    steps = {}
    for scale in (1.0, 0.25):
        out = tmp_path / f"scale{scale}"
        reference = {"columns": ["cross_reference"], "train_vision": True, "vision_lr_scale": scale}
        run(pt2v_config(data, out, stage1, reference=reference, train={"steps": 1}))
        steps[scale] = {
            part: {k: v - weights(stage1 / "pt2v" / part)[k] for k, v in weights(out / "pt2v" / part).items()}
            for part in ("vision", "transformer")
        }
    tower = steps[1.0]["vision"]
    assert max(np.abs(d).max() for d in tower.values()) > 1e-4  # the tower did move (1e-7: float32 rounding)
    for key, delta in tower.items():
        np.testing.assert_allclose(steps[0.25]["vision"][key], 0.25 * delta, rtol=0, atol=1e-7, err_msg=key)
    for key, delta in steps[1.0]["transformer"].items():
        np.testing.assert_allclose(steps[0.25]["transformer"][key], delta, rtol=0, atol=1e-7, err_msg=key)


def test_the_pipeline_samples_with_a_reference_and_is_t2v_without(data, stage1, t2v_run, tmp_path):
    pipe = MovieGenPipeline.from_pretrained(stage1, jit=False)
    assert pipe.takes_reference
    rows = load_manifest(data.train).rows
    root = Path(data.train).parent
    red, other = (read_image(root / r.extra["reference"])[0] for r in rows[:2])
    kwargs = {"num_frames": 16, "size": (32, 32), "steps": 2, "cfg_scale": 3.0, "seed": 1}
    prompt = rows[0].caption
    with_red = pipe.generate([prompt], reference=red, **kwargs)
    with_other = pipe.generate([prompt], reference=other, **kwargs)
    without = pipe.generate([prompt], **kwargs)
    assert with_red.shape == (1, 16, 32, 32, 3)
    assert np.abs(with_red.astype(int) - with_other).max() > 0, "the reference changed nothing"
    t2v_only = MovieGenPipeline(pipe.transformer, pipe.tae, pipe.text, pipe.info, jit=False)
    np.testing.assert_array_equal(without, t2v_only.generate([prompt], **kwargs))
    # one reference per prompt equals the same reference given to each prompt alone
    both = pipe.generate([prompt, prompt], reference=np.stack([red, other]), **kwargs)
    np.testing.assert_array_equal(both[0], with_red[0])
    with pytest.raises(RequestError, match="one per prompt"):
        pipe.generate([prompt], reference=np.stack([red, other]), **kwargs)
    with pytest.raises(RequestError, match="no vision encoder"):
        MovieGenPipeline.from_pretrained(t2v_run, jit=False).generate([prompt], reference=red, **kwargs)

    out = tmp_path / "samples"
    image = root / rows[0].extra["reference"]
    args = ["sample", "--checkpoint", str(stage1), "--prompts", prompt, "--reference", str(image)]
    args += ["--steps", "2", "--cfg_scale", "3.0", "--seed", "1", "--output_dir", str(out)]
    assert main(args) == 0
    record = json.loads((out / "samples.json").read_text())
    assert record["reference"] == str(image)
    from mg_data import read_video

    np.testing.assert_array_equal(read_video(out / record["samples"][0]["file"]).shape, (16, 32, 32, 3))


def test_export_of_a_pt2v_checkpoint_writes_the_runs_folder(stage1, tmp_path):
    out = export_model(stage1, tmp_path / "exported")
    for part, name in (
        ("transformer", "model.safetensors"),
        ("vision", "model.safetensors"),
        (".", PROJECTION_FILE),
    ):
        expected, got = weights(stage1 / "pt2v" / part, name), weights(out / part, name)
        assert set(got) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])


def test_bad_reference_settings_are_named_before_training(data, t2v_run, tmp_path, capfd):
    with pytest.raises(ConfigError, match=r"reference\.vision"):
        run(pt2v_config(data, tmp_path / "a", t2v_run, reference={"vision": str(tmp_path / "missing")}))
    with pytest.raises(ValueError, match="reference_columns"):
        run(pt2v_config(data, tmp_path / "b", t2v_run, reference={"vision": "tiny", "columns": ["face"]}))
    with pytest.raises(ConfigError, match=r"reference\.dropout"):
        run(pt2v_config(data, tmp_path / "c", t2v_run, reference={"vision": "tiny", "dropout": 1.5}))
    with pytest.raises(ConfigError, match=r"reference\.vision_lr_scale"):
        run(pt2v_config(data, tmp_path / "d", t2v_run, reference={"vision": "tiny", "vision_lr_scale": 0}))
    assert not (tmp_path / "a" / "checkpoints").exists()
    sample = ["sample", "--checkpoint", str(t2v_run), "--prompts", "x", "--reference"]
    assert main([*sample, str(tmp_path / "no.png")]) == 2
    assert f"mg-train sample: error: reference {tmp_path / 'no.png'} does not exist" in capfd.readouterr().err
    image = Path(data.train).parent / load_manifest(data.train).rows[0].extra["reference"]
    assert main([*sample, str(image)]) == 2  # a text-to-video pipeline has no vision encoder
    assert "--reference: " in capfd.readouterr().err


def test_the_bundled_pt2v_stages_follow_the_paper_and_fit_their_layouts():
    """Stage 1 from the T2V model on 8 latent frames with a frozen, named vision tower and paired references;
    stage 2 from stage 1 on full-length clips; stage 3 from stage 2 on cross-paired references with the tower
    trained; every bucket fits the model and the layout of the T2V config it extends."""
    from mg_train.config.loader import bundled_configs, load_config
    from mg_train.config.schema import TransformerTrainConfig
    from mg_train.transformer_train import check_model_fits, training_buckets
    from mg_transformer import TransformerConfig
    from mg_transformer.config import REAL_TEXT_DIMS

    for size in ("tiny", "1B", "5B", "30B"):
        names = [
            f"pt2v/stage1_paired_768px_{size}",
            f"pt2v/stage2_long_768px_{size}",
            f"pt2v/stage3_cross_768px_{size}",
        ]
        assert set(names) <= set(bundled_configs())
        stages = [load_config(TransformerTrainConfig, name) for name in names]
        t2v = load_config(TransformerTrainConfig, f"transformer/stage3_t2iv_768px_{size}")
        one, two, three = stages
        assert one.model.init_from == t2v.train.output_dir and one.reference.vision
        assert two.model.init_from == one.train.output_dir and two.reference.vision is None
        assert three.model.init_from == two.train.output_dir and three.reference.vision is None
        assert [s.data.frames for s in stages] == [64, 256, 256]
        assert [s.reference.train_vision for s in stages] == [False, False, True]
        assert [s.reference.columns for s in stages] == [["reference"], ["reference"], ["cross_reference"]]
        assert all(s.parallel == t2v.parallel and s.model.preset == t2v.model.preset for s in stages)
        dims = REAL_TEXT_DIMS if size != "tiny" else {"ul2": 64, "byt5": 48, "metaclip": 32}
        for name, cfg in zip(names, stages, strict=True):
            config = TransformerConfig.preset(cfg.model.preset, text_dims=dims, **cfg.model.overrides)
            degrees = {"cp": cfg.parallel.cp, "sp": cfg.parallel.sp, "tp": cfg.parallel.tp}
            check_model_fits(config, training_buckets(cfg.data, 16), (8, 8), degrees, name)
