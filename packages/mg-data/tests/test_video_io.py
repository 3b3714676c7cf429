"""Video and image reading and writing: round trips through the real codecs, odd indices, bad files."""

from __future__ import annotations

import os
import re
import stat

import numpy as np
import pytest

from mg_data import MediaReadError, VideoFile, probe, read_image, read_video, write_image, write_video
from mg_data.video_io import rgb_to_yuv420p


def test_mp4_round_trip_keeps_count_rate_and_pixels(tmp_path):
    rng = np.random.default_rng(0)
    # Smooth content (x264 is near-lossless on it at crf 10): a moving gradient.
    y, x = np.mgrid[0:48, 0:64]
    frames = np.stack(
        [np.stack([(x * 3 + 5 * t) % 256, (y * 4) % 256, np.full_like(x, 90 + t)], -1) for t in range(12)]
    ).astype(np.uint8)
    frames = np.clip(frames.astype(int) + rng.integers(-2, 3, frames.shape), 0, 255).astype(np.uint8)
    path = tmp_path / "a.mp4"
    write_video(path, frames, fps=12.0, crf=10)
    info = probe(path)
    assert (info.num_frames, info.height, info.width, info.fps, info.is_image) == (12, 48, 64, 12.0, False)
    decoded = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).mean() < 4.0


def test_read_accepts_repeated_and_unordered_indices(index_video):
    path, _ = index_video(num_frames=10)
    full = read_video(path)
    indices = [7, 2, 2, 9, 0, 7]
    with VideoFile(path) as video:
        assert video.num_frames == 10 and video.fps == 10.0
        np.testing.assert_array_equal(video.read(indices), full[indices])
        with pytest.raises(IndexError, match="outside"):
            video.read([10])


def test_decoded_frames_keep_their_index(index_video):
    path, frames = index_video(num_frames=20)
    decoded = read_video(path)
    expected = frames[..., 1].mean(axis=(1, 2))
    np.testing.assert_allclose(decoded[..., 1].mean(axis=(1, 2)), expected, atol=3)


def test_png_round_trip_is_exact_and_images_probe_as_one_frame(tmp_path, index_frames):
    frame = index_frames(1, 20, 30)[0]
    write_image(tmp_path / "a.png", frame)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), frame[None])
    info = probe(tmp_path / "a.png")
    assert (info.num_frames, info.height, info.width, info.is_image) == (1, 20, 30, True)


def test_read_video_reads_a_still_image_as_one_frame(tmp_path, index_frames):
    frame = index_frames(1, 20, 30)[0]
    write_image(tmp_path / "a.png", frame)
    np.testing.assert_array_equal(read_video(tmp_path / "a.png"), frame[None])
    np.testing.assert_array_equal(read_video(tmp_path / "a.png", [0, 0]), np.stack([frame, frame]))
    with pytest.raises(IndexError, match=r"a\.png: frame indices \[0, 1\] outside \[0, 1\)"):
        read_video(tmp_path / "a.png", [0, 1])
    with pytest.raises(ValueError, match=r"a\.png: no frame indices"):
        read_video(tmp_path / "a.png", [])


def test_greyscale_and_rgba_images_become_rgb(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((5, 6), 77, np.uint8)).save(tmp_path / "g.png")
    Image.fromarray(np.full((5, 6, 4), 200, np.uint8)).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), np.full((1, 5, 6, 3), 77, np.uint8))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), np.full((1, 5, 6, 3), 200, np.uint8))


def test_writes_are_atomic_with_normal_permissions(tmp_path, index_frames):
    write_video(tmp_path / "v.mp4", index_frames(4), fps=4)
    write_image(tmp_path / "i.png", index_frames(1)[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.png", "v.mp4"]
    for name in ("i.png", "v.mp4"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode & stat.S_IRGRP, f"{name} is not group-readable: {oct(mode)}"
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 5, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((2, 4, 6, 3), np.float32))
    assert not (tmp_path / "odd.mp4").exists()


@pytest.mark.parametrize("content", ["missing", "empty", "garbage", "truncated"])
def test_bad_videos_raise_an_error_naming_the_file(tmp_path, content, index_frames):
    good = tmp_path / "good.mp4"
    write_video(good, index_frames(16), fps=8)
    path = tmp_path / f"{content}.mp4"
    if content == "empty":
        path.write_bytes(b"")
    elif content == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif content == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(MediaReadError, match=re.escape(str(path))):
        probe(path)
    with pytest.raises(MediaReadError, match=re.escape(str(path))):
        read_video(path)


def test_bad_image_raises_an_error_naming_the_file(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"not a png")
    with pytest.raises(MediaReadError, match=r"bad\.png"):
        read_image(path)


@pytest.mark.parametrize("width", [16, 48, 64])
def test_narrow_widths_that_decord_cannot_copy_are_still_read(tmp_path, width):
    # decord 0.6 fails on some widths (16, 48, ...): the reader decodes those with PyAV, same frames
    y, x = np.mgrid[0:32, 0:width]
    frames = np.stack(
        [np.stack([(x * 4 + 9 * t) % 200, y * 5, np.full_like(x, 60)], -1) for t in range(6)]
    ).astype(np.uint8)
    write_video(tmp_path / "n.mp4", frames, fps=6, crf=0)
    decoded = read_video(tmp_path / "n.mp4", [4, 0, 4])
    assert decoded.shape == (3, 32, width, 3)
    assert np.abs(decoded.astype(int) - frames[[4, 0, 4]]).mean() < 3.0


def test_lossless_encoding_decodes_to_the_same_pixels_across_calls_and_file_names(tmp_path):
    """The same frames decode to the same pixels whatever the file name (heap layout) or call order.

    Lossless (crf 0): the decoded picture is the coded yuv420p input itself, so this holds whatever x264 decides.
    (Byte-identical files at the default crf are what the synthetic dataset relies on: test_synth checks them.
    At this odd-sized random-noise input, full-suite runs under tox twice gave a different bitstream at crf 18,
    never reproduced standalone.)"""
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (6, 32, 48, 3), dtype=np.uint8)
    decoded = []
    for i in range(12):
        path = tmp_path / ("x" * (i * 7 + 1) + ".mp4")
        write_video(path, frames, fps=8, crf=0)
        decoded.append(read_video(path))
    for pixels in decoded[1:]:
        np.testing.assert_array_equal(pixels, decoded[0])
    # lossless: the luma recomputed from the decoded RGB is the luma that was coded (up to rounding and clipping)
    coded = np.stack([rgb_to_yuv420p(f)[:32] for f in frames]).astype(int)
    back = np.stack([rgb_to_yuv420p(f)[:32] for f in decoded[0]]).astype(int)
    assert np.abs(back - coded).mean() < 1.5  # crf 18 gives 2.6 here


def test_rgb_to_yuv420p_matches_libswscale():
    """Luma equals swscale's within one level on noise; chroma (swscale filters differently) on smooth content."""
    import av

    def swscale(frame):
        return av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p").to_ndarray()

    noise = np.random.default_rng(3).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    ours, theirs = rgb_to_yuv420p(noise), swscale(noise)
    assert ours.shape == theirs.shape == (48, 48)
    assert np.abs(ours[:32].astype(int) - theirs[:32]).max() <= 1
    y, x = np.mgrid[0:32, 0:48]
    smooth = np.stack([x * 5, y * 7, 200 - x * 2 - y], -1).astype(np.uint8)
    ours, theirs = rgb_to_yuv420p(smooth), swscale(smooth)
    assert np.abs(ours.astype(int) - theirs).max() <= 2
