"""The synthetic editing sets: every task's target is its source with exactly the named change (read back from
the pixels with `analyze_clip`, and pixel for pixel where the edit leaves the frame alone), the animated form
moves source and target with one camera, and bad settings are named."""

from __future__ import annotations

import numpy as np
import pytest

from mg_data import analyze_clip, load_manifest, read_image, read_video
from mg_data.editing import EDIT_TASKS, MARK_COLOR, apply_camera, camera_path, make_editing_dataset


def _frames(root, name):
    return read_image(root / name) if name.endswith(".png") else read_video(root / name)


@pytest.fixture(scope="module")
def video_set(tmp_path_factory):
    return make_editing_dataset(
        tmp_path_factory.mktemp("edit") / "video", form="video", n=16, size=48, num_frames=8
    )


def test_every_task_changes_what_its_instruction_names_and_nothing_else(video_set):
    rows = load_manifest(video_set.train_manifest).rows + load_manifest(video_set.val_manifest).rows
    assert len(rows) == 16 and {r.extra["task"] for r in rows} == set(EDIT_TASKS)
    media = [r.video for r in load_manifest(video_set.root / "all.csv").rows]
    assert sorted(media) == sorted([r.video for r in rows] + [r.extra["source"] for r in rows])
    for row in rows:
        source, target = _frames(video_set.root, row.extra["source"]), _frames(video_set.root, row.video)
        assert source.shape == target.shape == (8, 48, 48, 3)
        seen_source, seen_target = analyze_clip(source, layout="THWC"), analyze_clip(target, layout="THWC")
        assert seen_source.color == row.extra["color"] and seen_source.direction == row.extra["direction"]
        task = row.extra["task"]
        assert row.caption == row.extra["instruction"]  # what the model is told (cache-text embeds it)
        if task == "remove":
            assert seen_target.color is None, row.extra["instruction"]  # nothing saturated left
            assert np.abs(np.diff(target.astype(int), axis=0)).max() <= 2  # a still background
            continue
        assert seen_target.color == row.extra["target_color"], row.extra["instruction"]
        assert row.extra["target_caption"].startswith(f"a {row.extra['target_color']} {row.extra['shape']}")
        assert seen_target.direction == row.extra["direction"]  # the motion is untouched
        changed = np.abs(source.astype(int) - target).max(axis=-1) > 6
        if task in ("recolor", "mark"):
            assert row.extra["target_color"] != row.extra["color"]
            assert changed.mean() < 0.2  # only the shape's pixels (H.264 noise aside)
            if task == "mark":
                assert row.extra["target_color"] == MARK_COLOR and MARK_COLOR in row.extra["instruction"]
        else:  # background: the texture changes, the shape stays where it was
            assert row.extra["target_background"] != row.extra["background"]
            assert changed.mean() > 0.3


def test_a_background_edit_paints_the_named_kinds_canonical_pattern_in_the_sources_look(tmp_path):
    """The instruction fixes the target: every edit to one kind shows the same pattern (however the sources'
    backgrounds were drawn), in the source's own brightness; the source's pattern is gone."""
    data = make_editing_dataset(
        tmp_path / "bg", form="image", n=12, size=48, tasks=("background",), val_fraction=0.0, crf=0
    )
    rows = load_manifest(data.train_manifest).rows

    def pattern(image, mask):  # luminance minus its mean where no shape is, 0 elsewhere
        luma = image.astype(float).mean(-1)
        return np.where(mask, luma - luma[mask].mean(), 0.0)

    def correlation(a, b):
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    seen = {}
    for row in rows:
        source, target = (_frames(data.root, name)[0] for name in (row.extra["source"], row.video))
        saturation = (source.max(-1) - source.min(-1).astype(float)) / np.maximum(source.max(-1), 1)
        free = saturation < 0.3
        free &= np.roll(free, 3, 0) & np.roll(free, -3, 0) & np.roll(free, 3, 1) & np.roll(free, -3, 1)
        brightness = source.astype(float).mean(-1)[free].mean(), target.astype(float).mean(-1)[free].mean()
        assert abs(brightness[0] - brightness[1]) < 12  # one look (the patterns' means differ a little)
        assert abs(correlation(pattern(source, free), pattern(target, free))) < 0.6
        seen.setdefault(row.extra["target_background"], []).append((target, free))
    shared = [pairs for pairs in seen.values() if len(pairs) > 1]
    assert shared  # 12 edits to 3 kinds
    for (first, mask_a), (second, mask_b) in (pairs[:2] for pairs in shared):
        both = mask_a & mask_b
        assert correlation(pattern(first, both), pattern(second, both)) > 0.9


def test_image_pairs_are_single_frames(tmp_path):
    data = make_editing_dataset(tmp_path / "img", form="image", n=8, size=32, tasks=("recolor", "remove"))
    for row in load_manifest(data.train_manifest).rows:
        assert row.video.endswith(".png") and row.extra["source"].endswith(".png")
        assert _frames(data.root, row.video).shape == (1, 32, 32, 3)


def test_the_animated_form_moves_source_and_target_with_one_camera(tmp_path):
    rng = np.random.default_rng(0)
    maps = camera_path((32, 32), 6, rng)
    identity = np.asarray([[[1.0, 0, 0], [0, 1.0, 0]]])
    image = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    np.testing.assert_array_equal(apply_camera(image, identity)[0], image)  # the identity map keeps the image
    assert np.all(maps[:, 0, 0] <= 1.0) and np.all(maps[:, 0, 2] >= 0)  # every output pixel is inside
    data = make_editing_dataset(
        tmp_path / "anim", form="animated", n=6, size=32, num_frames=6, tasks=("recolor",)
    )
    row = load_manifest(data.train_manifest).rows[0]
    source, target = _frames(data.root, row.extra["source"]), _frames(data.root, row.video)
    assert source.shape == target.shape == (6, 32, 32, 3)
    assert np.abs(np.diff(source.astype(int), axis=0)).mean() > 0.5  # the frame moves
    # same camera: where the colours agree (the background), source and target agree in every frame
    background = np.abs(source.astype(int) - target).max(axis=-1) <= 6
    assert background.mean() > 0.6
    assert analyze_clip(target, layout="THWC").color == row.extra["target_color"]


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="form must be one of"):
        make_editing_dataset(tmp_path / "a", form="gif")
    with pytest.raises(ValueError, match=r"tasks \['blur'\]"):
        make_editing_dataset(tmp_path / "b", tasks=("blur",))
    with pytest.raises(ValueError, match="mark colour 'magenta' must not be a subject colour"):
        make_editing_dataset(tmp_path / "c", colors=("red", "magenta"))


def test_the_cli_and_the_readme_command(tmp_path, capsys):
    """`mg-data synth --task editing` writes the set; flags of other tasks are refused; the README's command,
    taken from its bash block, runs as written."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    from mg_data.cli import main

    cmd = ["synth", "--task", "editing", "--out", str(tmp_path / "s"), "--quiet", "--n", "4", "--size", "32"]
    assert main([*cmd, "--form", "image", "--edit-tasks", "remove"]) == 0
    assert "train:" in capsys.readouterr().out
    rows = load_manifest(tmp_path / "s" / "train.csv").rows  # 4 examples: none held out at val_fraction 0.1
    assert (
        len(rows) == 4
        and {r.extra["task"] for r in rows} == {"remove"}
        and all(r.video.endswith(".png") for r in rows)
    )
    assert main([*cmd, "--holdout-subject", "red:square"]) == 2
    assert "--holdout-subject do not apply to --task editing" in capsys.readouterr().err

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    commands = [b.strip() for b in re.findall(r"```bash\n(.*?)```", readme, re.S) if "--task editing" in b]
    assert len(commands) == 1 and "\n" not in commands[0], commands
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    done = subprocess.run(["bash", "-c", commands[0]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    root = tmp_path / "data" / "edit_animated"
    rows = load_manifest(root / "train.csv").rows + load_manifest(root / "val.csv").rows
    assert len(rows) == 48 and {r.extra["task"] for r in rows} == set(EDIT_TASKS)
    assert _frames(root, rows[0].video).shape == (16, 64, 64, 3)


def test_the_dataset_serves_the_source_aligned_with_the_target(video_set, tmp_path):
    """`condition_column="source"`: pixels with the same random crop, flip and start frame as the target (the
    unedited background agrees), and from a latent cache the source's own latents."""
    from mg_data import LatentCacheWriter, VideoDataset

    dataset = VideoDataset(
        video_set.train_manifest,
        num_frames=6,
        size=32,
        random_crop=True,
        hflip=True,
        condition_column="source",
    )
    assert "condition" in dataset.output_keys
    for index in range(len(dataset)):
        row = dataset.manifest.rows[index]
        if row.extra["task"] not in ("recolor", "mark"):
            continue
        sample = dataset.get(index, epoch=3)
        target, source = sample["video"], sample["condition"]  # (3, T, H, W) in [-1, 1]
        assert source.shape == target.shape == (3, 6, 32, 32)
        colourful = np.abs(target - target.mean(axis=0, keepdims=True)).max(axis=0) > 0.15
        unedited = ~(colourful | np.roll(colourful, 1, -1) | np.roll(colourful, -1, -1))
        assert np.abs(source - target)[:, unedited].mean() < 0.03, row.extra["instruction"]
    rows = dataset.manifest.rows
    writer = LatentCacheWriter(tmp_path / "lat", 1.0, 0.0, latent_channels=4, frames=16, size=(48, 48))
    means = {}
    for name in [r.video for r in rows] + [r.extra["source"] for r in rows]:
        means[name] = np.random.default_rng(len(means)).standard_normal((4, 2, 6, 6)).astype(np.float32)
        writer.write(name, means[name], np.zeros_like(means[name]))
    cached = VideoDataset(video_set.train_manifest, latent_cache=tmp_path / "lat", condition_column="source")
    sample = cached.get(0, epoch=0)
    np.testing.assert_array_equal(sample["latent"], means[rows[0].video])
    np.testing.assert_array_equal(sample["condition"], means[rows[0].extra["source"]])
    with pytest.raises(ValueError, match="condition_column 'input' is not among its columns"):
        VideoDataset(video_set.train_manifest, condition_column="input")
