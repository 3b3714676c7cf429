"""The quickstart end to end at a toy size: every stage runs, every promised file is written, the report's
numbers agree with what is on disk (re-read independently), and bad settings fail before any work."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from mg_data import analyze_clip, load_manifest, read_video
from mg_tae import TAEConfig
from mg_train import quickstart
from mg_train.cli import main
from mg_train.config.loader import ConfigError, load_config
from mg_train.config.schema import QuickstartConfig
from mg_train.pipeline import MovieGenPipeline

TOY = [
    "num_clips=20",
    "size=32",
    "frames=8",
    "num_images=6",
    "tae_steps=3",
    "tae_batch_size=2",
    "tae_image_batch_size=3",
    "tae_crop=16",
    "transformer_steps=3",
    "transformer_batch_size=4",
    "sample_prompts=2",
    "sample_steps=2",
]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    cfg = load_config(QuickstartConfig, None, [*TOY, f"output_dir={out}"])
    return out, quickstart.run(cfg)


def test_every_stage_writes_its_outputs(toy_run):
    out, report = toy_run
    assert list(report["seconds"]) == [
        "1/6 synthetic dataset",
        "2/6 train the TAE",
        "3/6 evaluate the TAE on held-out clips",
        "4/6 cache latents and text embeddings",
        "5/6 train the transformer",
        "6/6 sample held-out captions",
    ]
    for name in ("loss.png", "report.md", "report.json", "tae_run/tae/config.json", "pipeline/pipeline.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text())["samples"] == report["samples"]
    assert 0 < report["peak_rss_gib"] < 8


def test_stills_train_the_tae_only(toy_run):
    out, _ = toy_run
    tae_rows = load_manifest(out / "data" / "tae_train.csv").rows
    clips = [row.video for row in load_manifest(out / "data" / "train.csv").rows]
    stills = [row.video for row in tae_rows if row.is_image]
    assert [row.video for row in tae_rows if not row.is_image] == clips
    assert len(stills) == 6 and all((out / "data" / still).is_file() for still in stills)
    assert not any(row.is_image for row in load_manifest(out / "data" / "all.csv").rows)
    tae_cfg = yaml.safe_load((out / "tae_run" / "config.yaml").read_text())
    assert (tae_cfg["data"]["image_ratio"], tae_cfg["data"]["image_batch_size"]) == (0.75, 3)
    assert tae_cfg["loss"]["mse_weight"] == 4.0


def test_the_tae_uses_the_pixel_shortcut(toy_run):
    out, _ = toy_run
    assert yaml.safe_load((out / "tae_run" / "config.yaml").read_text())["model"]["overrides"] == {
        "pixel_shortcut": True
    }
    assert json.loads((out / "tae_run" / "tae" / "config.json").read_text())["pixel_shortcut"] is True
    # four time parts: the shortcut moves inside a latent frame (one part would repeat each latent frame)
    assert TAEConfig.load(out / "tae_run" / "tae" / "config.json").shortcut_time_parts == 4


def test_clips_start_at_the_edge_behind_their_motion(toy_run):
    out, _ = toy_run
    assert json.loads((out / "data" / "synth.json").read_text())["start_jitter"] == 0.0
    for row in load_manifest(out / "data" / "all.csv").rows:
        x0, y0, x1, y1 = (float(row.extra[k]) for k in ("start_x", "start_y", "end_x", "end_y"))
        direction = row.extra["direction"]
        start, end = (x0, x1) if direction in ("left", "right") else (y0, y1)
        # starting at the margin m behind the motion, a clip covers travel (0.6) of the free space 32 - 2m;
        # a start anywhere else would leave a larger margin behind than the distance implies
        margin = start if direction in ("right", "down") else 32 - start
        assert abs(end - start) == pytest.approx(0.6 * (32 - 2 * margin), abs=0.02)


def test_report_matches_the_files_on_disk(toy_run):
    out, report = toy_run
    evaluation = json.loads((out / "tae_eval" / "metrics.json").read_text())
    assert report["tae"]["psnr"] == pytest.approx(evaluation["psnr"])
    truth = {
        row.caption: row.extra
        for name in ("train.csv", "val.csv")
        for row in load_manifest(out / "data" / name).rows
    }
    videos = report["samples"]["videos"]
    assert len(videos) == 2
    # the report reads the sampled arrays: sample them again, and check the written mp4s hold them
    pipe = MovieGenPipeline.from_pretrained(out / "pipeline", jit=False)
    sampled = pipe.generate([entry["caption"] for entry in videos], steps=2, cfg_scale=5.0, seed=0)
    for entry, array in zip(videos, sampled, strict=True):
        seen = analyze_clip(array, layout="THWC")
        assert (seen.color, seen.direction) == (entry["seen_color"], entry["seen_direction"])
        share = entry["largest_step_share"]
        assert (share is None and np.isnan(seen.largest_step_share)) or share == pytest.approx(
            seen.largest_step_share
        )
        assert entry["color_ok"] == (truth[entry["caption"]]["color"] == entry["seen_color"])
        assert entry["direction_ok"] == (truth[entry["caption"]]["direction"] == entry["seen_direction"])
    for entry, array, other in zip(videos, sampled, sampled[::-1], strict=True):
        frames = read_video(entry["file"]).astype(np.float32)
        assert frames.shape == array.shape == (8, 32, 32, 3)
        # x264 is lossy (the toy samples are mostly fine noise): each frame's mean colour survives, and the
        # file is closer to its own sample than to the other one
        np.testing.assert_allclose(frames.mean((1, 2)), array.mean((1, 2)), atol=2.0)
        assert np.abs(frames - array).mean() < np.abs(frames - other).mean()
    accuracy = np.mean([v["color_ok"] for v in videos])
    assert report["samples"]["color_accuracy"] == pytest.approx(accuracy)
    # the reconstructions' motion: the shape centre read again from every saved side-by-side video
    comparisons = [entry["comparison"] for entry in evaluation["per_video"]]
    assert len(comparisons) == len(evaluation["per_video"]) == report["tae"]["reconstructions"]["clips"]
    shares = [
        analyze_clip(read_video(path)[:, :, 32:], layout="THWC").largest_step_share for path in comparisons
    ]
    finite = [v for v in shares if np.isfinite(v)]
    seen_share = report["tae"]["reconstructions"]["largest_step_share"]
    assert seen_share == pytest.approx(float(np.median(finite))) if finite else seen_share is None
    assert len(report["tae"]["psnr_by_position"]) == 8
    assert "Motion inside latent frames" in (out / "report.md").read_text()


def test_the_copied_pipeline_samples_like_the_run(toy_run, tmp_path):
    """`<output_dir>/pipeline` carries its text encoders (relative paths in pipeline.json): moved elsewhere, it
    samples exactly like the transformer run's pipeline, which refers to `<output_dir>/text_encoders`."""
    out, _ = toy_run
    spec = json.loads((out / "pipeline" / "pipeline.json").read_text())["text"]["encoders"]
    assert spec == {"ul2": "text_encoders/ul2", "metaclip": "text_encoders/metaclip"}
    shutil.copytree(out / "pipeline", tmp_path / "moved")
    ours = MovieGenPipeline.from_pretrained(tmp_path / "moved", jit=False)
    theirs = MovieGenPipeline.from_pretrained(out / "transformer_run", jit=False)
    a = ours.generate(["a red circle moving left"], steps=2, cfg_scale=3.0, seed=1)[0]
    b = theirs.generate(["a red circle moving left"], steps=2, cfg_scale=3.0, seed=1)[0]
    np.testing.assert_array_equal(a, b)


def test_text_encoders_read_one_token_per_caption_word(toy_run):
    out, _ = toy_run
    pipe = MovieGenPipeline.from_pretrained(out / "pipeline", jit=False)
    assert pipe.text.names == ("ul2", "metaclip")
    caption = load_manifest(out / "data" / "train.csv").rows[0].caption
    words = caption.split()
    embedded = pipe.text.embed([caption, "a red circle zigzagging left"])
    for name in ("ul2", "metaclip"):
        assert (out / "text_encoders" / name / "tokenizer.json").is_file()
        _, mask = embedded[name]
        # the words plus the EOS; an unknown word is one <unk> token, not its letters
        np.testing.assert_array_equal(mask.sum(1), [len(words) + 1, 6])
    cached = json.loads((out / "text" / "meta.json").read_text())["encoders"]
    assert sorted(cached) == ["metaclip", "ul2"]
    assert {entry["max_length"] for entry in cached.values()} == {quickstart.WORD_MAX_LENGTH}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("size=40", "size=40: must be a positive multiple of 16"),
        ("tae_crop=48", "tae_crop=48: must be a multiple of 8 between 8 and size=32"),
        ("num_clips=5", "num_clips=5: need at least 10"),
        ("transformer_steps=0", "transformer_steps=0: must be at least 1"),
        ("transformer_lr=0", "transformer_lr=0.0: must be > 0"),
        ("tae_image_ratio=1.0", "tae_image_ratio=1.0: need num_images >= 0 and 0 <= tae_image_ratio < 1"),
        ("shape_size=[0.2, 0.1]", r"shape_size=\[0.2, 0.1\], texture_contrast=0.4: need 0.02 <= low <= high"),
        ("text_encoders=[ul2, t5]", r"text_encoders=\['ul2', 't5'\]: expected one or more distinct names"),
        ("text_encoders=[]", r"text_encoders=\[\]: expected one or more distinct names"),
        (
            "start_jitter=-0.5",
            r"travel=0.6, start_jitter=-0.5: need travel in \(0, 1\] and start_jitter in \[0, 1\]",
        ),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, override, message):
    out = tmp_path / "q"
    cfg = load_config(QuickstartConfig, None, [*TOY, f"output_dir={out}", override])
    with pytest.raises(ConfigError, match=message):
        quickstart.run(cfg)
    assert not out.exists()


def test_the_command_reports_bad_settings_with_exit_code_2(tmp_path, capsys):
    assert main(["quickstart", f"output_dir={tmp_path / 'q'}", "size=40"]) == 2
    assert "config error: size=40" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_the_size_rule_follows_the_models_configs(tmp_path):
    # a 4x4 transformer patch on the tiny TAE's 8x compression: sizes must be multiples of 32, not 16
    overrides = [*TOY, f"output_dir={tmp_path / 'q'}", "size=48", "transformer={patch_size: [1, 4, 4]}"]
    cfg = load_config(QuickstartConfig, None, overrides)
    with pytest.raises(
        ConfigError, match=r"size=48: must be a positive multiple of 32 \(TAE 8x, transformer patch 4x4\)"
    ):
        quickstart.run(cfg)


PT2V_TOY = [*TOY, "num_clips=24", "task=pt2v", "pt2v_steps=2", "pt2v_cross_steps=2", "pt2v_seeds=1"]


def test_the_readme_pt2v_commands_run_every_stage_and_report_what_the_videos_show(tmp_path, run_readme_block):
    """The README's toy PT2V block as written: every stage, a report whose figures are what its videos show (the
    test recounts them from the per-video read-backs), both pipelines, and sampling with a reference."""
    from mg_train import pt2v_quickstart

    run_readme_block("mg-train quickstart task=pt2v", tmp_path)
    out = tmp_path / "runs/pt2v_toy"
    report = json.loads((out / "report.json").read_text())
    assert [name.split(" ", 1)[0] for name in report["seconds"]] == [f"{i}/7" for i in range(1, 8)]
    assert MovieGenPipeline.from_pretrained(tmp_path / report["pipeline"], jit=False).takes_reference
    assert not MovieGenPipeline.from_pretrained(tmp_path / report["t2v_pipeline"], jit=False).takes_reference
    cfg = load_config(QuickstartConfig, None, PT2V_TOY)
    clips = pt2v_quickstart.held_out_clips(cfg, out / "data" / "val.csv")
    assert clips and {(c.extra["color"], c.extra["shape"]) for c in clips} <= {
        ("red", "triangle"),
        ("blue", "circle"),
    }
    truth = {  # from the subject and caption each video was asked for
        "color": lambda v: v["subject"].split()[0],
        "shape": lambda v: v["subject"].split()[1],
        "direction": lambda v: v["caption"].split()[-1],
    }
    for model in ("pt2v", "pt2v_stage1", "t2v"):
        videos = report[model]["videos"]
        assert len(videos) == len(clips)  # pt2v_seeds=1
        assert all((tmp_path / v["file"]).is_file() for v in videos)  # paths as the command was given them
        for key, wanted in truth.items():
            share = sum(v[f"seen_{key}"] == wanted(v) for v in videos) / len(videos)
            assert report[model][f"{key}_accuracy"] == pytest.approx(share), (model, key)
    assert all(v["reference"].endswith("_cross.png") for v in report["pt2v"]["videos"])
    assert "| PT2V (cross-paired reference + caption) |" in (out / "report.md").read_text()
    stage3 = yaml.safe_load((out / "pt2v_stage3_run" / "config.yaml").read_text())["reference"]
    assert stage3["train_vision"] is True
    assert stage3["vision_lr_scale"] == QuickstartConfig().pt2v_vision_lr_scale
    samples = json.loads((tmp_path / "samples_pt2v/samples.json").read_text())
    assert samples["reference"].endswith("000001_cross.png")
    assert read_video(tmp_path / "samples_pt2v" / samples["samples"][0]["file"]).shape == (8, 32, 32, 3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "holdout_subjects=[purple:star]",
            r"holdout_subjects: \['purple:star'\] are not subjects of the set",
        ),
        ("holdout_subjects=[red]", r"holdout_subjects: 'red' is not COLOR:SHAPE"),
        ("pt2v_steps=0", "pt2v_steps=0: must be at least 1"),
        ("pt2v_vision_lr_scale=0", r"pt2v_vision_lr_scale=0(\.0)?: must be > 0"),
    ],
)
def test_bad_pt2v_settings_fail_before_any_work(tmp_path, override, message):
    out = tmp_path / "q"
    cfg = load_config(QuickstartConfig, None, [*PT2V_TOY, f"output_dir={out}", override])
    with pytest.raises(ConfigError, match=message):
        quickstart.run(cfg)
    assert not out.exists()
