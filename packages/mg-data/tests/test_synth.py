"""The synthetic dataset: determinism, split, vocabulary balance, and ground truth read back from pixels."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest

from mg_data import VideoDataset, analyze_clip, load_manifest, make_synthetic_dataset, read_video
from mg_data.synth import BACKGROUNDS, COLORS, ClipSpec, _background, render_clip


def test_manifests_split_and_ground_truth_columns(synth):
    everything = load_manifest(synth.all_manifest)
    train, val = load_manifest(synth.train_manifest), load_manifest(synth.val_manifest)
    assert len(everything) == 46 and len(train) + len(val) == 46 == synth.num_train + synth.num_val
    assert {r.video for r in train.rows}.isdisjoint(r.video for r in val.rows)
    assert all(r.caption != "a blue square moving up" for r in train.rows)
    assert any(r.caption == "a blue square moving up" for r in val.rows)
    for row in everything.rows:
        color, shape, direction = row.extra["color"], row.extra["shape"], row.extra["direction"]
        expected = f"a {color} {shape}" + ("" if direction == "none" else f" moving {direction}")
        assert row.caption == expected
        assert row.extra["split"] in ("train", "val")
    videos = [r for r in everything.rows if not r.is_image]
    assert len(videos) == 40 and all(
        (r.num_frames, r.height, r.width, r.fps) == (16, 64, 64, 8.0) for r in videos
    )
    # 48 captions in a seeded cycle: 40 clips use 40 distinct captions
    assert len(Counter(r.caption for r in videos)) == 40
    assert json.loads((synth.root / "synth.json").read_text())["n"] == 40


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", n=6, seed=1, size=32, num_frames=6)
    b = make_synthetic_dataset(tmp_path / "b", n=6, seed=1, size=32, num_frames=6)
    c = make_synthetic_dataset(tmp_path / "c", n=6, seed=2, size=32, num_frames=6)
    assert a.all_manifest.read_text() == b.all_manifest.read_text() != c.all_manifest.read_text()
    for i in range(6):
        name = f"videos/{i:06d}.mp4"
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()
    assert not np.array_equal(
        read_video(a.root / "videos/000000.mp4"), read_video(c.root / "videos/000000.mp4")
    )


def test_captions_are_balanced_over_the_vocabulary(tmp_path):
    result = make_synthetic_dataset(
        tmp_path,
        n=24,
        seed=0,
        size=16,
        num_frames=2,
        colors=["red", "blue"],
        shapes=["circle"],
        directions=["left", "right", "up"],
        val_fraction=0.25,
    )
    rows = load_manifest(result.all_manifest).rows
    assert Counter(r.caption for r in rows) == {c: 4 for c in result.captions}
    assert result.num_val == 6 and result.num_train == 18


def test_ground_truth_is_recovered_from_decoded_clips(synth):
    rows = load_manifest(synth.all_manifest).rows
    wrong = Counter()
    for row in rows:
        path = synth.root / row.video
        analysis = analyze_clip(read_video(path))
        for field in ("color", "direction"):
            wrong[field] += getattr(analysis, field) != row.extra[field]
        wrong["shape"] += analysis.shape != row.extra["shape"]
        if not row.is_image:
            dx = float(row.extra["end_x"]) - float(row.extra["start_x"])
            dy = float(row.extra["end_y"]) - float(row.extra["start_y"])
            assert np.hypot(analysis.displacement[0] - dx, analysis.displacement[1] - dy) < 3.0, row.video
    assert wrong["color"] == 0 and wrong["direction"] == 0
    assert wrong["shape"] <= len(rows) // 10


def test_analysis_reads_model_layout_from_the_dataset(synth):
    dataset = VideoDataset(synth.train_manifest, num_frames=16, start="center")
    for i in range(5):
        row = dataset.row(i)
        analysis = analyze_clip(dataset[i]["video"])  # (3, T, H, W) float in [-1, 1]
        assert analysis.matches(color=row.extra["color"], direction=row.extra["direction"])


def test_analysis_of_rendered_frames_and_of_a_static_shape():
    spec = ClipSpec(
        "magenta",
        "square",
        "left",
        (48, 64),
        10,
        radius=7.0,
        start=(50.0, 20.0),
        end=(14.0, 20.0),
        background="stripes",
        background_seed=1,
    )
    frames = render_clip(spec)
    analysis = analyze_clip(frames)
    assert (analysis.color, analysis.shape, analysis.direction) == ("magenta", "square", "left")
    assert analysis.displacement[0] == pytest.approx(-36.0, abs=0.5) and abs(analysis.displacement[1]) < 0.5
    assert analysis.coverage == pytest.approx(np.pi * 0 + (2 * 7 * 0.886) ** 2 / (48 * 64), rel=0.15)
    still = render_clip(
        ClipSpec("green", "circle", None, (32, 32), 4, 6.0, (16.0, 16.0), (16.0, 16.0), "blobs", 2)
    )
    assert analyze_clip(still).direction == "none"
    assert np.isnan(analyze_clip(still).largest_step_share)  # the centre does not move: no path to share
    # the centre moves 36 px in 9 equal steps of 4 px: the largest step is 1/9 of the path; repeating the first
    # frame of each half (standing still, then one jump of 20 px, then still) puts the whole path in one step
    assert analysis.largest_step_share == pytest.approx(1 / 9, abs=0.02)
    halves = frames[[0, 0, 0, 0, 0, 5, 5, 5, 5, 5]]
    assert analyze_clip(halves).largest_step_share == pytest.approx(1.0)
    grey = np.full((4, 16, 16, 3), 120, np.uint8)
    assert analyze_clip(grey).color is None
    assert set(COLORS) >= {"red", "green", "blue", "yellow"}


def test_shape_size_and_texture_contrast_change_the_pixels_as_asked(tmp_path):
    """Radii drawn from `shape_size` (checked against the shape's pixel area read back from the first frame),
    and background texture scaled by `texture_contrast` (its spread outside the shape), same captions/split."""
    kwargs = dict(n=8, seed=3, size=64, num_frames=4, shapes=["square"], crf=0)
    small = make_synthetic_dataset(tmp_path / "small", **kwargs)
    big = make_synthetic_dataset(tmp_path / "big", shape_size=(0.22, 0.24), texture_contrast=0.25, **kwargs)
    flat = make_synthetic_dataset(tmp_path / "flat", texture_contrast=0.0, **kwargs)
    assert [r.caption for r in load_manifest(small.all_manifest).rows] == [
        r.caption for r in load_manifest(big.all_manifest).rows
    ]
    assert json.loads((big.root / "synth.json").read_text())["shape_size"] == [0.22, 0.24]
    for i in range(8):
        name = f"videos/{i:06d}.mp4"
        frames = {
            k: read_video(d.root / name)[0] for k, d in (("small", small), ("big", big), ("flat", flat))
        }
        side = {k: np.sqrt(analyze_clip(f[None]).coverage * 64 * 64) for k, f in frames.items()}
        # a square of radius r has side 2 * 0.886 r
        assert 2 * 0.886 * 0.11 * 64 - 1.5 <= side["small"] <= 2 * 0.886 * 0.15 * 64 + 1.5
        assert 2 * 0.886 * 0.22 * 64 - 1.5 <= side["big"] <= 2 * 0.886 * 0.24 * 64 + 1.5

        def texture_spread(frame):
            grey = frame.astype(np.float32).mean(-1)
            saturation = (frame.max(-1).astype(np.float32) - frame.min(-1)) / np.maximum(frame.max(-1), 1)
            return grey[saturation < 0.3].std()

        assert texture_spread(frames["flat"]) < 2.5 < 0.5 * texture_spread(frames["small"])  # shape rim only
        assert texture_spread(frames["big"]) < 0.45 * texture_spread(frames["small"])


def test_one_seed_gives_one_look_for_every_background_kind():
    """Brightness and colour cast come from the seed alone (a background edit changes only the pattern): with
    the texture off every kind is the same flat colour, with it on the kinds differ and share that mean colour
    within the texture's amplitude."""
    for seed in range(5):
        flat = [_background(k, 32, 32, np.random.default_rng(seed), 0.0) for k in BACKGROUNDS]
        for image in flat[1:]:
            np.testing.assert_array_equal(image, flat[0])
        assert np.ptp(flat[0]) <= 0.08 + 1e-6  # one colour: the cast spans at most 2 x 0.04 over channels
        textured = [_background(k, 32, 32, np.random.default_rng(seed)) for k in BACKGROUNDS]
        for a, b in itertools.pairwise(textured):
            assert np.abs(a - b).mean() > 0.01  # other patterns
            assert np.abs(a.mean((0, 1)) - flat[0][0, 0]).max() <= 0.12  # about the same colour


def test_full_travel_moves_shapes_from_edge_to_edge(tmp_path):
    result = make_synthetic_dataset(tmp_path, n=12, seed=4, size=(48, 64), num_frames=4, travel=1.0)
    for row in load_manifest(result.all_manifest).rows:
        x0, y0, x1, y1 = (float(row.extra[k]) for k in ("start_x", "start_y", "end_x", "end_y"))
        # edge to edge: the start and end margins are the same, so the two centres mirror each other
        if row.extra["direction"] in ("left", "right"):
            assert x0 + x1 == pytest.approx(64) and y0 == y1
        else:
            assert y0 + y1 == pytest.approx(48) and x0 == x1


def test_start_jitter_zero_starts_at_the_edge_behind_the_motion(tmp_path):
    kwargs = dict(n=16, seed=5, size=(48, 64), num_frames=4, travel=0.5)
    anchored = make_synthetic_dataset(tmp_path / "anchored", start_jitter=0.0, **kwargs)
    for row in load_manifest(anchored.all_manifest).rows:
        x0, y0, x1, y1 = (float(row.extra[k]) for k in ("start_x", "start_y", "end_x", "end_y"))
        direction = row.extra["direction"]
        start, end, extent = (x0, x1, 64) if direction in ("left", "right") else (y0, y1, 48)
        # the start's distance to the edge behind the motion is the margin m, and the shape covers half of
        # the free space extent - 2m (travel=0.5); manifests round centres to 0.01 px
        margin = start if direction in ("right", "down") else extent - start
        assert abs(end - start) == pytest.approx(0.5 * (extent - 2 * margin), abs=0.02)
        assert (end > start) == (direction in ("right", "down"))
    default = make_synthetic_dataset(tmp_path / "default", **kwargs)
    jitter_one = make_synthetic_dataset(tmp_path / "one", start_jitter=1.0, **kwargs)
    assert default.all_manifest.read_text() == jitter_one.all_manifest.read_text()
    assert default.all_manifest.read_text() != anchored.all_manifest.read_text()
    assert json.loads((anchored.root / "synth.json").read_text())["start_jitter"] == 0.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="colors must be a non-empty subset"):
        make_synthetic_dataset("/nonexistent", colors=["purple"])
    with pytest.raises(ValueError, match="holdout captions"):
        make_synthetic_dataset("/nonexistent", holdout_captions=["a red cube moving left"])
    with pytest.raises(ValueError, match="at least 2 frames"):
        make_synthetic_dataset("/nonexistent", num_frames=1)
    with pytest.raises(ValueError, match=r"shape_size must be .* got \(0.2, 0.1\)"):
        make_synthetic_dataset("/nonexistent", shape_size=(0.2, 0.1))
    with pytest.raises(ValueError, match="texture_contrast must be in"):
        make_synthetic_dataset("/nonexistent", texture_contrast=-1)
    with pytest.raises(ValueError, match=r"start_jitter must be in \[0, 1\]"):
        make_synthetic_dataset("/nonexistent", start_jitter=1.5)
