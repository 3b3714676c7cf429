"""The synthetic personalisation (PT2V) set and reference images in the dataset."""

from __future__ import annotations

import numpy as np
import pytest

from mg_data import load_manifest
from mg_data.dataset import VideoDataset
from mg_data.personalization import PLAIN_GREY, make_personalization_dataset
from mg_data.synth import COLORS, SHAPES
from mg_data.video_io import read_image, read_video


@pytest.fixture(scope="module")
def pt2v_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("pt2v")
    return make_personalization_dataset(out, n=24, size=32, holdout_subjects=[("blue", "triangle")], seed=3)


def _subject_mask(image: np.ndarray, color: str) -> np.ndarray:
    """Pixels within 60 RGB levels of the subject's colour."""
    return np.abs(image.astype(int) - np.asarray(COLORS[color])).max(-1) < 60


def test_captions_name_the_motion_only_and_the_references_show_the_subject(pt2v_set):
    rows = load_manifest(pt2v_set.train_manifest).rows + load_manifest(pt2v_set.val_manifest).rows
    assert len(rows) == 24
    for row in rows:
        color, direction = row.extra["color"], row.extra["direction"]
        assert row.caption == f"the subject moving {direction}"
        assert not any(word in row.caption for word in [*COLORS, *SHAPES])
        first = read_video(pt2v_set.root / row.video)[0]
        paired = read_image(pt2v_set.root / row.extra["reference"])[0]
        cross = read_image(pt2v_set.root / row.extra["cross_reference"])[0]
        assert paired.shape == cross.shape == (32, 32, 3)
        # paired: the subject where and as large as in the clip's first frame (video coding blurs edges a bit)
        in_clip, in_paired = _subject_mask(first, color), _subject_mask(paired, color)
        overlap = (in_clip & in_paired).sum() / max((in_clip | in_paired).sum(), 1)
        assert overlap > 0.6, (row.video, overlap)
        # both references: the subject's colour on a plain grey background, nothing else
        for reference in (paired, cross):
            subject = _subject_mask(reference, color)
            assert subject.sum() >= 9
            background = reference[~_near_edge(_near_edge(subject))]
            assert np.abs(background.astype(int) - round(PLAIN_GREY * 255)).max() <= 1
        # cross-paired: another size or position
        assert abs(int(_subject_mask(cross, color).sum()) - int(in_paired.sum())) > 3 or not np.array_equal(
            _centre(_subject_mask(cross, color)).round(), _centre(in_paired).round()
        )


def _near_edge(mask: np.ndarray) -> np.ndarray:
    """The mask grown by one pixel (two calls: the anti-aliased rims of a triangle's corners)."""
    grown = mask.copy()
    for axis in (0, 1):
        for shift in (-1, 1):
            grown |= np.roll(mask, shift, axis)
    return grown


def _centre(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_held_out_subjects_appear_only_in_validation_and_the_set_is_deterministic(pt2v_set, tmp_path):
    train = load_manifest(pt2v_set.train_manifest).rows
    val = load_manifest(pt2v_set.val_manifest).rows
    assert not [r for r in train if (r.extra["color"], r.extra["shape"]) == ("blue", "triangle")]
    assert [r for r in val if (r.extra["color"], r.extra["shape"]) == ("blue", "triangle")]
    again = make_personalization_dataset(
        tmp_path, n=24, size=32, holdout_subjects=[("blue", "triangle")], seed=3
    )
    for name in (
        "train.csv",
        "val.csv",
        "references/000005.png",
        "references/000005_cross.png",
        "synth.json",
    ):
        assert (again.root / name).read_bytes() == (pt2v_set.root / name).read_bytes(), name
    with pytest.raises(ValueError, match=r"holdout_subjects \[\('pink', 'circle'\)\] are not"):
        make_personalization_dataset(tmp_path / "x", n=2, holdout_subjects=[("pink", "circle")])


def test_the_dataset_serves_reference_images(pt2v_set):
    plain = VideoDataset(
        pt2v_set.train_manifest, num_frames=16, reference_columns=("reference",), reference_size=16
    )
    assert plain.output_keys[-2:] == ["reference", "substituted"]
    sample = plain[0]
    assert sample["reference"].shape == (16, 16, 3) and sample["reference"].dtype == np.uint8
    row = plain.row(sample["index"])
    full = read_image(pt2v_set.root / row.extra["reference"])[0].astype(float)
    expected = full.reshape(16, 2, 16, 2, 3).mean((1, 3))  # a 2x downscale of a 32-px still
    assert np.abs(sample["reference"] - expected).mean() < 12
    # both columns: each sample picks one, deterministically per (seed, epoch, index)
    mixed = VideoDataset(
        pt2v_set.train_manifest,
        num_frames=16,
        reference_columns=("reference", "cross_reference"),
        reference_size=32,
    )
    picked = set()
    for epoch in range(6):
        mixed.set_epoch(epoch)
        image = mixed[0]["reference"]
        picked.add(
            next(
                c
                for c in ("reference", "cross_reference")
                if np.array_equal(image, read_image(pt2v_set.root / mixed.row(0).extra[c])[0])
            )
        )
        mixed.set_epoch(epoch)
        np.testing.assert_array_equal(mixed[0]["reference"], image)
    assert picked == {"reference", "cross_reference"}
    with pytest.raises(ValueError, match=r"reference_columns \['face'\] are not among its columns"):
        VideoDataset(pt2v_set.train_manifest, reference_columns=("face",))


def test_cli_writes_the_set_and_names_bad_subjects(tmp_path, capsys):
    from mg_data.cli import main

    cmd = ["synth", "--task", "personalization", "--out", str(tmp_path / "s"), "--quiet"]
    assert main([*cmd, "--n", "6", "--size", "32", "--holdout-subject", "red:square"]) == 0
    assert "train:" in capsys.readouterr().out
    assert (tmp_path / "s" / "references" / "000000_cross.png").is_file()
    assert main([*cmd, "--holdout-subject", "red-square"]) == 2
    assert "expected COLOR:SHAPE" in capsys.readouterr().err
    assert main([*cmd, "--images", "3"]) == 2
    assert "--images do not apply to --task personalization" in capsys.readouterr().err


def test_the_readme_command_runs_as_written(tmp_path):
    """The README's personalisation command, taken from its bash block and run in a shell as written."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    commands = [b.strip() for b in blocks if "--task personalization" in b]
    assert len(commands) == 1 and "\n" not in commands[0], commands
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    done = subprocess.run(["bash", "-c", commands[0]], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    val = load_manifest(tmp_path / "data" / "pt2v" / "val.csv").rows
    train = load_manifest(tmp_path / "data" / "pt2v" / "train.csv").rows
    assert len(train) + len(val) == 96
    assert {(r.extra["color"], r.extra["shape"]) for r in val} >= {("blue", "triangle")}
    assert ("blue", "triangle") not in {(r.extra["color"], r.extra["shape"]) for r in train}
