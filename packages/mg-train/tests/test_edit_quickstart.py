"""`mg-train quickstart task=edit`: the read-back that judges an edit is right on the ground truth (the exact
target passes, the unchanged input fails, the unnamed region is measured where the edit does not reach), and the
README's toy block runs every stage and reports what its edited videos show."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mg_data import analyze_clip, load_manifest, read_video
from mg_data.editing import EDIT_TASKS, make_editing_dataset
from mg_data.synth import COLORS
from mg_train import edit_quickstart
from mg_train.config.loader import ConfigError, load_config
from mg_train.config.schema import QuickstartConfig
from mg_train.pipeline import MovieGenPipeline


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Rendered video edits of every task: (row, source, target) with the files' decoded frames."""
    data = make_editing_dataset(
        tmp_path_factory.mktemp("edits"), form="video", n=8, size=48, num_frames=8, val_fraction=0.0, seed=3
    )
    rows = load_manifest(data.train_manifest).rows
    return [
        (row, read_video(data.root / row.extra["source"]), read_video(data.root / row.video)) for row in rows
    ]


def test_the_ground_truth_edit_passes_and_the_unchanged_input_fails(clips):
    assert {row.extra["task"] for row, _, _ in clips} == set(EDIT_TASKS)
    for row, source, target in clips:
        task = row.extra["task"]
        exact = edit_quickstart.judge_edit(row, source, target, target)
        assert exact["applied"], (task, exact)
        assert exact["motion_kept"] is (None if task == "remove" else True), (task, exact)
        # outside the edit the target is the source re-encoded: near-lossless (crf 16), far above the 25 dB target
        assert exact["psnr_unedited_db"] > 35, (task, exact)
        unchanged = edit_quickstart.judge_edit(row, source, target, source)
        assert not unchanged["applied"], (task, unchanged)
        assert unchanged["psnr_unedited_db"] == float("inf")  # the input against itself
        assert unchanged["texture_kept"] == (None if task == "background" else 1.0)


def test_the_unedited_region_excludes_the_edit_and_sees_damage_outside_it(clips):
    row, source, target = next(c for c in clips if c[0].extra["task"] == "recolor")
    region = edit_quickstart.changed_region(source, target)
    changed = np.abs(source.astype(int) - target.astype(int)).max(-1) > edit_quickstart.CHANGE_LEVEL
    assert changed.any() and (region >= changed).all() and 0 < region.mean() < 0.5
    # grown by exactly MARGIN pixels, without wrapping: a changed corner pixel marks only its own corner
    corner = np.zeros_like(source)
    corner[:, 0, 0] = 255
    grown = edit_quickstart.changed_region(np.zeros_like(source), corner)
    side = edit_quickstart.MARGIN + 1
    assert grown[:, :side, :side].all() and grown.sum() == source.shape[0] * side * side
    # a copy of the target with a grey square painted where nothing was edited: PSNR falls to what that square costs
    damaged = target.copy()
    free = np.argwhere(~region.any(0))
    y, x = free[len(free) // 2]
    damaged[:, max(y - 2, 0) : y + 2, max(x - 2, 0) : x + 2] = 128
    kept = ~region
    expected = 10 * np.log10(255.0**2 / np.mean((damaged[kept].astype(float) - source[kept]) ** 2))
    judged = edit_quickstart.judge_edit(row, source, target, damaged)
    assert judged["psnr_unedited_db"] == pytest.approx(expected, abs=0.01)
    assert (
        judged["psnr_unedited_db"]
        < edit_quickstart.judge_edit(row, source, target, target)["psnr_unedited_db"]
    )


def test_texture_kept_is_the_share_of_the_inputs_texture_in_the_output(clips):
    """1 for the input itself or the input plus noise (uncorrelated), the share of the contrast kept for a
    contrast-reduced or blurred copy, 0 for a flat one; judge_edit reports it for the unedited region. (Two
    H.264 encodings of the same faint texture score 0.4-1.0 against each other, so the ground-truth target is no
    reference here.)"""
    row, source, target = next(c for c in clips if c[0].extra["task"] == "remove")
    mask = np.ones(source.shape[:3], bool)
    rng = np.random.default_rng(0)
    noisy = source + rng.normal(0, 20, source.shape)  # louder than the texture itself
    assert edit_quickstart.texture_kept(noisy, source, mask) == pytest.approx(1.0, abs=0.1)
    half = (source.astype(float) - source.mean()) * 0.5 + source.mean()  # the contrast halved
    assert edit_quickstart.texture_kept(half, source, mask) == pytest.approx(0.5, abs=1e-6)
    # a 5 x 5 box blur (edges repeated) keeps the colours and smooths the texture away
    height, width = source.shape[1:3]
    padded = np.pad(source.astype(float), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    blurred = sum(padded[:, i : i + height, j : j + width] for i in range(5) for j in range(5)) / 25
    assert edit_quickstart.texture_kept(blurred, source, mask) < 0.3
    assert edit_quickstart.texture_kept(np.full_like(blurred, 128.0), source, mask) == 0.0
    judged = edit_quickstart.judge_edit(row, source, target, np.rint(blurred).astype(np.uint8))
    assert judged["texture_kept"] < 0.3


def test_a_background_edit_counts_only_where_the_named_pattern_shows(clips):
    """pattern_kept is the share of a pattern's contrast the output carries (1 itself, 0.5 at half contrast, 0 flat,
    at every scale: blobs too); a background edit is applied at PATTERN_SHOWN or more of the target's pattern,
    so an output that is flat, or keeps the input's texture, fails even where its colour is right."""
    edits = [c for c in clips if c[0].extra["task"] == "background"]
    assert edits
    for row, source, target in edits:
        mask = edit_quickstart.background_region(source)
        seen = analyze_clip(source, layout="THWC")
        assert 0.5 < mask.mean() < 1 - seen.coverage  # all but the shape (and its rim)
        shape = np.zeros(source.shape[:3], bool)  # the shape's pixels rendered without texture or H.264
        for t in range(len(shape)):
            shape[t] = np.abs(source[t].astype(int) - COLORS[row.extra["color"]]).max(-1) < 40
        assert shape.sum() > 0.5 * seen.coverage * shape.size and not (mask & shape).any()
        kept = ~edit_quickstart.edited_region(
            "background", source, target
        )  # PSNR unedited: the shape's inside
        assert kept.any() and shape[kept].mean() > 0.95
        luma = target.astype(float).mean(-1, keepdims=True)
        frame_means = np.array([luma[t][mask[t]].mean() for t in range(len(luma))])[:, None, None, None]
        half = target.astype(float) - 0.5 * (luma - frame_means)  # the pattern at half its contrast
        flat = target.astype(float) - (luma - frame_means)  # the target's mean brightness, no pattern
        assert edit_quickstart.pattern_kept(target, target, mask) == pytest.approx(1.0)
        assert edit_quickstart.pattern_kept(half, target, mask) == pytest.approx(0.5, abs=1e-6)
        assert edit_quickstart.pattern_kept(flat, target, mask) == pytest.approx(0.0, abs=1e-6)
        assert abs(edit_quickstart.pattern_kept(source, target, mask)) < 0.5  # another texture
        for output, applied in ((half, True), (flat, False), (source, False)):
            judged = edit_quickstart.judge_edit(
                row, source, target, np.rint(output).clip(0, 255).astype(np.uint8)
            )
            assert judged["applied"] is applied, (row.caption, judged)
            assert judged["new_pattern"] == pytest.approx(
                edit_quickstart.pattern_kept(np.rint(output).clip(0, 255), target, mask), abs=1e-3
            )


def test_the_readme_edit_commands_run_every_stage_and_report_what_the_edits_show(tmp_path, run_readme_block):
    """The README's toy Edit block as written: nine stages, stage I's manifest alternates image-edit pairs with
    T2V clips (task none, black input), per-stage figures recounted from the per-video read-backs, and an edit
    with the final pipeline."""
    run_readme_block("mg-train quickstart task=edit", tmp_path)
    out = tmp_path / "runs/edit_toy"
    report = json.loads((out / "report.json").read_text())
    assert [name.split(" ", 1)[0] for name in report["seconds"]] == [f"{i}/9" for i in range(1, 10)]
    assert MovieGenPipeline.from_pretrained(tmp_path / report["pipeline"], jit=False).takes_video
    stage1 = load_manifest(out / "data" / "stage1.csv").rows
    pairs = [r for r in stage1 if r.video.endswith(".png")]
    t2v = [r for r in stage1 if not r.video.endswith(".png")]
    assert pairs and all(r.extra["source"].endswith(".png") and r.extra["task"] in EDIT_TASKS for r in pairs)
    assert t2v and all(r.extra["source"] == edit_quickstart.BLACK and r.extra["task"] == "" for r in t2v)
    assert not read_video(out / "data" / edit_quickstart.BLACK).any()
    assert (out / "edit_stage1_run" / "config.yaml").read_text().count("image_ratio: 0.5") == 1
    stage2 = load_manifest(out / "data" / "stage2.csv").rows  # animated pairs, 4 video marks, 4 backgrounds
    assert [r.extra["task"] for r in stage2 if r.video.startswith("backgrounds/")] == ["background"] * 4
    assert [r.extra["task"] for r in stage2 if r.video.startswith("marks/")] == ["mark"] * 4
    assert all(r.extra["source"].endswith(".mp4") for r in stage2)
    for run in ("tae_run", "t2v_run", "edit_stage1_run", "edit_stage3_run"):  # jit=false reaches every run
        assert "jit: false" in (out / run / "config.yaml").read_text(), run
    test = load_manifest(out / "data" / "test.csv").rows
    assert list(report["stages"]) == list(edit_quickstart.STAGES)
    for stage, figures in report["stages"].items():
        videos = figures["videos"]
        assert [v["instruction"] for v in videos] == [r.caption for r in test]
        assert all((tmp_path / v["file"]).is_file() for v in videos)  # paths as the command was given them
        assert figures["applied"] == pytest.approx(np.mean([v["applied"] for v in videos])), stage
        moving = [v["motion_kept"] for v in videos if v["task"] != "remove"]
        assert figures["motion_kept"] == (pytest.approx(np.mean(moving)) if moving else None), stage
        assert figures["psnr_unedited_db"] == pytest.approx(
            np.median([v["psnr_unedited_db"] for v in videos])
        )
    assert "| stage III (backtranslation) |" in (out / "report.md").read_text()
    backtranslated = load_manifest(out / "data" / "stage3.csv").rows
    assert sum(r.video.startswith("backtranslated/") for r in backtranslated) == 2
    assert read_video(tmp_path / "edited_toy.mp4").shape == (8, 32, 32, 3)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("edit_steps=[1,2]", r"edit_steps=\[1, 2\]: give three step counts"),
        ("edit_animated=5", "edit_animated=5: need at least 10"),
        ("edit_test=0", "edit_test=0: must be at least 1"),
        ("edit_backgrounds=0", "edit_backgrounds=0: must be at least 1"),
        ("edit_lr=0", r"edit_lr=0(\.0)?: must be > 0"),
    ],
)
def test_bad_edit_settings_fail_before_any_work(tmp_path, override, message):
    from mg_train import quickstart

    out = tmp_path / "q"
    cfg = load_config(QuickstartConfig, None, ["task=edit", f"output_dir={out}", override])
    with pytest.raises(ConfigError, match=message):
        quickstart.run(cfg)
    assert not out.exists()
