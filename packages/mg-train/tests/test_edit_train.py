"""Movie Gen Edit on the one engine: a stage started from a T2V run is exactly that T2V model at lr 0 (condition
columns zero, the seeded task parameters) and its pipeline generates exactly the T2V pipeline's videos in its T2V
mode; training moves the condition columns and the task embedding; a later stage continues from the edit run;
`mg-train edit` edits a video; `mg-train export` writes the same folder; bad settings are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from mg_data import load_manifest, read_video
from mg_train.cli import main
from mg_train.config.loader import ConfigError
from mg_train.export import export_model
from mg_train.pipeline import MovieGenPipeline
from mg_train.testing import make_training_data
from mg_train.testing import transformer_train_config as train_config
from mg_train.transformer_train import run
from mg_transformer import MovieGenTransformer
from mg_transformer.editing import TASK_FILE, EditTransformer

TASKS = ["recolor", "mark", "remove", "background"]


def weights(folder: Path, name: str = "model.safetensors") -> dict[str, np.ndarray]:
    return load_file(str(folder / name))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_data(tmp_path_factory.mktemp("edit_data"), n=8, editing=True)


@pytest.fixture(scope="module")
def t2v_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("t2v") / "run"
    run(train_config(data, out, train={"steps": 2}))
    return out


def edit_config(inputs, out: Path, init_from: Path, **sections):
    model = {"preset": "tiny", "overrides": {}, "init_from": str(init_from)}
    return train_config(inputs, out, model=model, **sections)


@pytest.fixture(scope="module")
def stage1(data, t2v_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("edit1") / "run"
    data_section = {
        "manifest": data.train,
        "val_manifest": data.val,
        "frames": 16,
        "size": [32, 32],
        "batch_size": 2,
    }
    train = {"steps": 3, "val_every": 3, "val_batches": 1}
    run(edit_config(data, out, t2v_run, editing={"tasks": TASKS, "seed": 2}, data=data_section, train=train))
    return out


def test_at_lr_0_the_edit_run_is_the_t2v_model_and_generates_its_videos(data, t2v_run, tmp_path):
    out = tmp_path / "lr0"
    run(
        edit_config(
            data, out, t2v_run, editing={"tasks": TASKS, "seed": 2}, optim={"lr": 0.0}, train={"steps": 1}
        )
    )
    t2v, edit = weights(t2v_run / "transformer"), weights(out / "edit" / "transformer")
    assert set(edit) == set(t2v)
    for name, value in t2v.items():
        expected = np.concatenate([value, np.zeros_like(value)], 1) if name == "patch_embed.weight" else value
        np.testing.assert_array_equal(edit[name], expected, err_msg=name)
    fresh = EditTransformer.from_t2v(
        MovieGenTransformer.from_pretrained(t2v_run / "transformer"), ["none", *TASKS], seed=2
    )
    saved = weights(out / "edit", TASK_FILE)
    for key, param in fresh.task_parameters().items():
        np.testing.assert_array_equal(saved[key], param.asnumpy(), err_msg=key)
    assert json.loads((out / "edit" / "edit.json").read_text())["tasks"] == ["none", *TASKS]
    kwargs = {"num_frames": 16, "size": (32, 32), "steps": 2, "cfg_scale": 3.0, "seed": 4}
    editing = MovieGenPipeline.from_pretrained(out, jit=False)
    assert editing.takes_video and not MovieGenPipeline.from_pretrained(t2v_run, jit=False).takes_video
    expected = MovieGenPipeline.from_pretrained(t2v_run, jit=False).generate(
        ["make the red circle blue"], **kwargs
    )
    assert expected.std() > 1  # a video, not a constant
    np.testing.assert_allclose(
        editing.generate(["make the red circle blue"], **kwargs).astype(int),
        expected,
        atol=1,  # uint8 rounding of float32 sums taken in another order
    )


def test_training_moves_the_condition_columns_and_the_task_embedding(stage1, t2v_run):
    from mg_train.testing import run_metrics

    losses = [m["val_loss"] for m in run_metrics(stage1) if "val_loss" in m]
    assert len(losses) == 2 and all(np.isfinite(losses))  # validation with the inputs and tasks of val.csv
    edit = weights(stage1 / "edit" / "transformer")
    features = edit["patch_embed.weight"].shape[1] // 2
    assert np.abs(edit["patch_embed.weight"][:, features:]).max() > 0, "the condition columns did not train"
    assert not np.array_equal(edit["proj_out.weight"], weights(t2v_run / "transformer")["proj_out.weight"])
    saved = weights(stage1 / "edit", TASK_FILE)
    fresh = np.random.default_rng(2).standard_normal(saved["embedding.weight"].shape).astype(np.float32)
    assert not np.array_equal(saved["embedding.weight"], fresh)
    assert np.abs(saved["time.weight"]).max() > 0  # zero-initialised, trained


def test_a_later_stage_continues_from_the_edit_run(data, stage1, tmp_path):
    same = tmp_path / "lr0"
    run(edit_config(data, same, stage1, optim={"lr": 0.0}, train={"steps": 1}))
    for name in ("transformer/model.safetensors", TASK_FILE):
        folder, file = (Path(name).parent, Path(name).name)
        before, after = weights(stage1 / "edit" / folder, file), weights(same / "edit" / folder, file)
        for key in before:
            np.testing.assert_array_equal(after[key], before[key], err_msg=f"{name} {key}")


def test_the_edit_command_edits_a_video(data, stage1, t2v_run, tmp_path, capfd):
    row = load_manifest(data.train).rows[0]
    video = Path(data.train).parent / row.extra["source"]
    out = tmp_path / "edited.mp4"
    args = ["edit", "--checkpoint", str(stage1), "--video", str(video), "--instruction", row.caption]
    args += ["--task", row.extra["task"], "--steps", "2", "--output", str(out)]
    assert main(args) == 0
    assert read_video(out).shape == read_video(video).shape == (16, 32, 32, 3)
    assert json.loads(out.with_suffix(".json").read_text())["instruction"] == row.caption
    pipe = MovieGenPipeline.from_pretrained(stage1, jit=False)
    direct = pipe.edit(read_video(video), row.caption, row.extra["task"], steps=2, seed=0)
    assert direct.shape == (16, 32, 32, 3)
    assert main([*args[:-6], "--task", "blur", "--output", str(out)]) == 2
    assert "task must be one of" in capfd.readouterr().err
    assert main(["edit", "--checkpoint", str(t2v_run), *args[3:]]) == 2
    assert "not a Movie Gen Edit pipeline" in capfd.readouterr().err


def test_export_of_an_edit_checkpoint_writes_the_runs_folder(stage1, tmp_path):
    out = export_model(stage1, tmp_path / "exported")
    for name in ("transformer/model.safetensors", TASK_FILE):
        folder, file = Path(name).parent, Path(name).name
        expected, got = weights(stage1 / "edit" / folder, file), weights(out / folder, file)
        assert set(got) == set(expected)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])


def test_bad_edit_settings_are_named_before_training(data, t2v_run, tmp_path):
    with pytest.raises(
        ConfigError, match=r"tasks \['background', 'mark', 'remove'\] are not among editing.tasks"
    ):
        run(edit_config(data, tmp_path / "a", t2v_run, editing={"tasks": ["recolor"]}))
    with pytest.raises(ConfigError, match="cannot also be a PT2V run"):
        run(
            edit_config(data, tmp_path / "b", t2v_run, editing={"tasks": TASKS}, reference={"vision": "tiny"})
        )
    assert not (tmp_path / "a" / "checkpoints").exists()


def test_the_bundled_edit_stages_fit_their_layouts():
    """Stage I from the T2V model on one-frame pairs alternating with T2V clips, with the four tasks; stage II from stage I on the T2V
    config's clips, keeping stage I's tasks; stage III from stage II on backtranslated pairs; every bucket fits
    the model and the layout of the T2V config."""
    from mg_train.config.loader import bundled_configs, load_config
    from mg_train.config.schema import TransformerTrainConfig
    from mg_train.transformer_train import check_model_fits, training_buckets
    from mg_transformer import TransformerConfig
    from mg_transformer.config import REAL_TEXT_DIMS

    for size in ("tiny", "1B", "5B", "30B"):
        names = [
            f"edit/stage1_image_{size}",
            f"edit/stage2_animated_{size}",
            f"edit/stage3_backtranslation_{size}",
        ]
        assert set(names) <= set(bundled_configs())
        one, two, three = (load_config(TransformerTrainConfig, name) for name in names)
        assert three.model.init_from == two.train.output_dir and "backtranslation" in three.data.manifest
        t2v = load_config(TransformerTrainConfig, f"transformer/stage3_t2iv_768px_{size}")
        assert one.model.init_from == t2v.train.output_dir and one.editing.tasks == TASKS
        assert two.model.init_from == one.train.output_dir and two.editing.tasks == []
        # stage I: the T2V buckets (image-edit pairs in image buckets, T2V clips in video buckets), alternating
        assert (one.data.frames, two.data.frames) == (t2v.data.frames, t2v.data.frames)
        assert one.data.image_ratio == 0.5 and two.data.image_ratio == t2v.data.image_ratio
        dims = REAL_TEXT_DIMS if size != "tiny" else {"ul2": 64, "byt5": 48, "metaclip": 32}
        for name, cfg in zip(names, (one, two, three), strict=True):
            assert cfg.parallel == t2v.parallel
            config = TransformerConfig.preset(cfg.model.preset, text_dims=dims, **cfg.model.overrides)
            degrees = {"cp": cfg.parallel.cp, "sp": cfg.parallel.sp, "tp": cfg.parallel.tp}
            check_model_fits(config, training_buckets(cfg.data, 16), (8, 8), degrees, name)


def test_backtranslation_writes_the_reversed_pairs(stage1, tmp_path):
    """Stage III's data: each clip edited by the model with a forward instruction is the source, the clip itself
    the target (the same file), with the backward instruction; an edit stage trains on it."""
    from mg_data import make_synthetic_dataset
    from mg_train import backtranslate
    from mg_train.config.loader import load_config
    from mg_train.config.schema import BacktranslateConfig

    clips = make_synthetic_dataset(tmp_path / "clips", n=2, size=32, num_frames=16, seed=5, val_fraction=0.0)
    out = tmp_path / "bt"
    overrides = [f"checkpoint={stage1}", f"manifest={clips.train_manifest}", f"output_dir={out}", "steps=2"]
    backtranslate.run(load_config(BacktranslateConfig, None, overrides))
    rows = load_manifest(out / "train.csv").rows
    originals = load_manifest(clips.train_manifest).rows
    assert [r.extra["forward_task"] for r in rows] == ["recolor", "mark"]
    pipe = MovieGenPipeline.from_pretrained(stage1, jit=False)
    for index, (row, clip) in enumerate(zip(rows, originals, strict=True)):
        color, shape = clip.extra["color"], clip.extra["shape"]
        assert (out / row.video).read_bytes() == (clips.root / clip.video).read_bytes()  # the real clip
        assert row.caption == row.extra["instruction"] and row.caption.endswith(f"{shape} {color}")
        assert (
            row.extra["task"] == "recolor"
            and color in row.caption
            and shape in row.extra["forward_instruction"]
        )
        if index > 0:
            continue  # one edit compared with the model's own (each costs seconds)
        edited = read_video(out / row.extra["source"]).astype(float)
        same, other = (
            pipe.edit(read_video(clips.root / clip.video), row.extra["forward_instruction"],
                      row.extra["forward_task"], steps=2, cfg_scale=5.0, seed=seed)
            for seed in (index, index + 10)
        )  # fmt: skip
        error, wrong = np.abs(edited - same).mean(), np.abs(edited - other).mean()
        assert error < 0.5 * wrong, (index, error, wrong)  # the model's edit for that seed (H.264 aside)
    media = {r.video: r.caption for r in load_manifest(out / "all.csv").rows}
    assert len(media) == 4  # a text cache of all.csv holds the caption each training row reads for its file
    assert all(media[row.video] == row.caption for row in rows)
    assert all(media[row.extra["source"]] == row.extra["forward_instruction"] for row in rows)
    with pytest.raises(ConfigError, match=r"\['remove'\] cannot be reversed"):
        backtranslate.run(load_config(BacktranslateConfig, None, [*overrides, "tasks=[remove]"]))
