"""Frame sampling and numpy transforms against naive recomputations."""

from __future__ import annotations

import numpy as np
import pytest

from mg_data import (
    ClipTooShort,
    FrameSampling,
    hflip,
    resize,
    resize_crop,
    resize_shortest_side,
    sample_frame_indices,
    to_model_layout,
    to_uint8_frames,
)
from mg_data.transforms import cover_size, latent_frames


def test_stride_and_center_start():
    sampling = FrameSampling(num_frames=4, stride=3, start="center")
    # span = 3 * 3 + 1 = 10 of 20 frames, slack 10, centred start 5
    np.testing.assert_array_equal(sample_frame_indices(20, 30.0, sampling), [5, 8, 11, 14])
    assert sampling.span(30.0) == 10 and sampling.fits(10, 30.0) and not sampling.fits(9, 30.0)


def test_random_start_covers_every_valid_start_and_is_seeded():
    sampling = FrameSampling(num_frames=3, stride=2)
    starts = {int(sample_frame_indices(9, 0.0, sampling, np.random.default_rng(s))[0]) for s in range(300)}
    assert starts == {0, 1, 2, 3, 4}  # span 5 in 9 frames
    a = sample_frame_indices(50, 0.0, sampling, np.random.default_rng(7))
    b = sample_frame_indices(50, 0.0, sampling, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.diff(a), [2, 2])


def test_target_fps_sets_a_fractional_stride():
    # 30 fps source to 12 fps: step 2.5 source frames, rounded per frame (numpy rounds half to even)
    sampling = FrameSampling(num_frames=5, fps=12.0, start="center")
    expected_offsets = np.round(np.arange(5) * 2.5).astype(int)  # 0, 2, 5, 8, 10
    indices = sample_frame_indices(11, 30.0, sampling)
    np.testing.assert_array_equal(indices, expected_offsets)
    assert sampling.output_fps(30.0) == pytest.approx(12.0)
    # the same 5 frames at 60 fps cover the same 0.83 s: twice the stride
    assert sampling.span(60.0) == 2 * 10 + 1


def test_short_video_policies():
    indices = dict(
        loop=sample_frame_indices(5, 0.0, FrameSampling(num_frames=4, stride=2, short_policy="loop")),
        pad=sample_frame_indices(5, 0.0, FrameSampling(num_frames=4, stride=2, short_policy="pad")),
    )
    np.testing.assert_array_equal(indices["loop"], [0, 2, 4 % 5, 6 % 5])
    np.testing.assert_array_equal(indices["pad"], [0, 2, 4, 4])
    with pytest.raises(ClipTooShort, match="5 frames, the clip needs 7"):
        sample_frame_indices(5, 0.0, FrameSampling(num_frames=4, stride=2), np.random.default_rng(0))


@pytest.mark.parametrize(
    "bad", [dict(num_frames=0), dict(stride=0), dict(fps=-1.0), dict(start="end"), dict(short_policy="crash")]
)
def test_sampling_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        FrameSampling(**bad)


def _box_downscale(frames, factor):
    t, h, w, c = frames.shape
    return frames.reshape(t, h // factor, factor, w // factor, factor, c).astype(np.float64).mean(axis=(2, 4))


def test_resize_with_area_filter_matches_block_means():
    frames = np.random.default_rng(1).integers(0, 256, (2, 8, 12, 3)).astype(np.uint8)
    out = resize(frames, 4, 6, interpolation="area")
    np.testing.assert_allclose(out, _box_downscale(frames, 2), atol=1.0)


def test_resize_crop_preserves_aspect_and_centres():
    # 8 x 16 frames into a 2 x 2 target: cover size 2 x 4 (factor 4), then the centre 2 columns.
    frames = np.random.default_rng(2).integers(0, 256, (3, 8, 16, 3)).astype(np.uint8)
    assert cover_size(8, 16, 2, 2) == (2, 4)
    out = resize_crop(frames, 2, 2, interpolation="area")
    np.testing.assert_allclose(out, _box_downscale(frames, 4)[:, :, 1:3], atol=1.0)
    # a random crop picks one of the three horizontal offsets, the same for every frame
    seen = set()
    for seed in range(40):
        crop = resize_crop(frames, 2, 2, rng=np.random.default_rng(seed), interpolation="area")
        matches = [
            o for o in range(3) if np.abs(crop - _box_downscale(frames, 4)[:, :, o : o + 2]).max() <= 1.0
        ]
        assert len(matches) >= 1
        seen.update(matches)
    assert seen == {0, 1, 2}


def test_resize_shortest_side_and_no_op():
    frames = np.zeros((1, 30, 60, 3), np.uint8)
    assert resize_shortest_side(frames, 15).shape == (1, 15, 30, 3)
    assert resize(frames, 30, 60) is frames


@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (2, 130, 128, 3)])  # one call / plane by plane
def test_model_layout_formula_and_inverse(shape):
    frames = np.random.default_rng(3).integers(0, 256, shape).astype(np.uint8)
    for view in (frames, hflip(frames)):  # also a non-contiguous view
        video = to_model_layout(view)
        assert video.shape == (3, *shape[:3]) and video.dtype == np.float32
        for c in range(3):
            np.testing.assert_allclose(video[c], view[..., c] / 127.5 - 1.0, rtol=0, atol=1e-6)
        assert video.min() >= -1.0 and video.max() <= 1.0
        np.testing.assert_array_equal(to_uint8_frames(video), view)


def test_hflip_mirrors_columns():
    frames = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    flipped = hflip(frames)
    for x in range(4):
        np.testing.assert_array_equal(flipped[:, :, x], frames[:, :, 3 - x])


def test_latent_frame_count_is_ceil_over_8():
    assert [latent_frames(t) for t in (1, 8, 9, 16, 17, 32)] == [1, 1, 2, 2, 3, 4]
