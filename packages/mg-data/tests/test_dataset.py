"""VideoDataset: pixels against an independent decoder, sampling, augmentation, bad files, buckets, caches."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mg_data import (
    Bucket,
    BucketBatchSampler,
    BucketConfig,
    LatentCacheWriter,
    VideoDataset,
    collate,
    load_manifest,
    write_image,
    write_manifest,
    write_video,
)


def _pyav_frames(path):
    """All frames of a video decoded by PyAV (a second decoder, independent of decord)."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def _manifest(tmp_path, videos, name="m.csv", captions=None):
    rows = [{"video": v, "caption": (captions or {}).get(v, f"caption of {v}")} for v in videos]
    return write_manifest(tmp_path / name, rows)


def test_pixels_match_an_independent_decoder(synth):
    manifest = load_manifest(synth.all_manifest)
    dataset = VideoDataset(manifest, num_frames=8, stride=2, start="center")
    sample = dataset[0]
    assert sample["video"].shape == (3, 8, 64, 64) and sample["video"].dtype == np.float32
    frames = _pyav_frames(manifest.abspath(0))  # 16 frames: span 15, slack 1, centred start 0
    expected = frames[0:16:2].transpose(3, 0, 1, 2).astype(np.float32) / 127.5 - 1
    assert np.abs(sample["video"] - expected).max() <= 3 / 127.5
    assert sample["caption"] == manifest.rows[0].caption
    assert sample["fps"] == pytest.approx(4.0) and int(sample["index"]) == 0


def test_frame_indices_follow_stride_start_and_seed(tmp_path, index_video, decoded_index):
    index_video("v.mp4", num_frames=20)
    path = _manifest(tmp_path, ["v.mp4"])
    dataset = VideoDataset(path, num_frames=5, stride=3, seed=1)
    starts = set()
    for epoch in range(12):
        picked = decoded_index(dataset.get(0, epoch=epoch)["video"])
        assert np.array_equal(np.diff(picked), [3, 3, 3, 3]) and 0 <= picked[0] <= 20 - 13
        starts.add(int(picked[0]))
        again = VideoDataset(path, num_frames=5, stride=3, seed=1).get(0, epoch=epoch)["video"]
        np.testing.assert_array_equal(dataset.get(0, epoch=epoch)["video"], again)
    assert len(starts) >= 4  # the start moves with the epoch
    centred = VideoDataset(path, num_frames=5, stride=3, start="center")
    np.testing.assert_array_equal(decoded_index(centred[0]["video"]), [3, 6, 9, 12, 15])


def test_target_fps_and_short_policies(tmp_path, index_video, decoded_index):
    index_video("v.mp4", num_frames=20, fps=20.0)
    path = _manifest(tmp_path, ["v.mp4"])
    at_5fps = VideoDataset(path, num_frames=4, fps=5.0, start="center")[0]
    # 20 -> 5 fps is a stride of 4: span 13 of 20 frames, slack 7, centred start 7 // 2 = 3
    np.testing.assert_array_equal(decoded_index(at_5fps["video"]), [3, 7, 11, 15])
    assert at_5fps["fps"] == pytest.approx(5.0)
    looped = VideoDataset(path, num_frames=8, stride=3, short_policy="loop")[0]
    np.testing.assert_array_equal(decoded_index(looped["video"]), np.arange(0, 24, 3) % 20)
    padded = VideoDataset(path, num_frames=8, stride=3, short_policy="pad")[0]
    np.testing.assert_array_equal(decoded_index(padded["video"]), np.minimum(np.arange(0, 24, 3), 19))


def test_resize_flip_and_random_crop(tmp_path, index_video):
    index_video("v.mp4", num_frames=4, height=32, width=64)
    path = _manifest(tmp_path, ["v.mp4"])
    plain = VideoDataset(path, num_frames=2, size=16, start="center")[0]["video"]
    assert plain.shape == (3, 2, 16, 16)
    red = plain[0, 0].mean(axis=0)
    assert red[0] < red[-1]  # the ramp rises left to right; the centre crop keeps the middle of it
    flipped = VideoDataset(path, num_frames=2, size=(16, 16), hflip=True, start="center")
    directions = {bool(flipped.get(0, epoch=e)["video"][0, 0].mean(axis=0)[0] > 0) for e in range(20)}
    assert directions == {True, False}
    for e in range(5):
        red = flipped.get(0, epoch=e)["video"][0, 0].mean(axis=0)
        np.testing.assert_allclose(np.sort(red), np.sort(plain[0, 0].mean(axis=0)), atol=0.05)
    cropped = VideoDataset(path, num_frames=2, size=16, random_crop=True, start="center")
    lefts = {round(float(cropped.get(0, epoch=e)["video"][0, 0, :, 0].mean()), 2) for e in range(20)}
    assert len(lefts) > 3  # the crop window moves


def test_images_are_one_frame_clips(synth):
    manifest = load_manifest(synth.all_manifest)
    index = next(i for i, row in enumerate(manifest.rows) if row.is_image)
    sample = VideoDataset(manifest, num_frames=8, size=32)[index]
    assert sample["video"].shape == (3, 1, 32, 32) and sample["caption"] == manifest.rows[index].caption


def _corrupt_set(tmp_path, index_frames):
    for i in range(4):
        write_video(tmp_path / f"ok{i}.mp4", index_frames(12, offset=i), fps=6)
    good = (tmp_path / "ok0.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (tmp_path / "garbage.mp4").write_bytes(bytes(range(256)) * 10)
    (tmp_path / "bad.png").write_bytes(b"nope")
    names = [
        "ok0.mp4",
        "truncated.mp4",
        "ok1.mp4",
        "missing.mp4",
        "garbage.mp4",
        "ok2.mp4",
        "bad.png",
        "ok3.mp4",
    ]
    return _manifest(tmp_path, names)


def test_bad_files_are_skipped_counted_and_reported(tmp_path, index_frames):
    path = _corrupt_set(tmp_path, index_frames)
    dataset = VideoDataset(path, num_frames=4, stride=2)
    with pytest.warns(UserWarning, match="skipping sample"):
        samples = [dataset[i] for i in range(len(dataset))]
    served = [int(s["index"]) for s in samples]
    assert served == [0, 2, 2, 5, 5, 5, 7, 7]  # each bad sample replaced by the next good one
    assert sorted(dataset.errors) == [1, 3, 4, 6] and dataset.num_substituted == 4
    assert "missing.mp4: file not found" in dataset.errors[3]
    report = dataset.report()
    assert "4 unreadable samples, 4 substitutions" in report and "line 3: truncated.mp4" in report
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known-bad files are not retried (no new warning)
        assert int(dataset[1]["index"]) == 2


def test_all_bad_raises_with_the_last_reason(tmp_path):
    path = _manifest(tmp_path, ["a.mp4", "b.mp4"])
    dataset = VideoDataset(path, max_retries=5)
    with (
        pytest.warns(UserWarning),
        pytest.raises(
            RuntimeError, match=r"sample 0 .*a\.mp4.*failed to load; last error: .*b\.mp4: file not found"
        ),
    ):
        dataset[0]


def test_buckets_route_and_shape_samples(tmp_path, index_frames):
    # wide clips, short clips (6 frames), images, and a corrupt file
    for i in range(3):
        write_video(tmp_path / f"wide{i}.mp4", index_frames(12, 32, 96), fps=8)
        write_video(tmp_path / f"short{i}.mp4", index_frames(6, 64, 64), fps=8)
        write_image(tmp_path / f"img{i}.png", index_frames(1, 40, 40)[0])
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    names = (
        [f"wide{i}.mp4" for i in range(3)]
        + [f"short{i}.mp4" for i in range(3)]
        + [f"img{i}.png" for i in range(3)]
        + ["broken.mp4"]
    )
    manifest = load_manifest(write_manifest(tmp_path / "m.csv", [{"video": n} for n in names]))
    config = BucketConfig(
        [Bucket(32, 32, 8, 2), Bucket(16, 48, 8, 2), Bucket(32, 32, 4, 2), Bucket(32, 32, 1, 3)]
    )
    dataset = VideoDataset(manifest, buckets=config)
    names_by_bucket = {
        config[b].name: sorted(manifest.rows[i].video for i in np.flatnonzero(dataset.bucket_ids == b))
        for b in range(4)
    }
    assert names_by_bucket == {
        "8f_32x32": [],
        "8f_16x48": ["wide0.mp4", "wide1.mp4", "wide2.mp4"],
        "4f_32x32": ["short0.mp4", "short1.mp4", "short2.mp4"],
        "img_32x32": ["img0.png", "img1.png", "img2.png"],
    }
    assert dataset.assignment.drop_reasons() == {"unreadable": 1}
    for i in range(9):
        bucket = config[int(dataset.bucket_ids[i])]
        assert dataset[i]["video"].shape == (3, bucket.num_frames, bucket.height, bucket.width)
    with pytest.raises(ValueError, match="is in no bucket"):
        dataset[9]
    as_short = dataset.get(3, bucket=2)  # a 6-frame clip can be asked for in another bucket's shape
    assert as_short["video"].shape == (3, 4, 32, 32)
    assert dataset.get(0, bucket=Bucket(24, 24, 2, 1))["video"].shape == (3, 2, 24, 24)


def test_bucket_substitute_comes_from_the_same_bucket(tmp_path, index_frames):
    for i in range(4):
        write_video(tmp_path / f"v{i}.mp4", index_frames(10, 32, 32), fps=8)
    write_image(tmp_path / "i.png", index_frames(1)[0])
    path = _manifest(tmp_path, ["v0.mp4", "v1.mp4", "i.png", "v2.mp4", "v3.mp4"])
    manifest = load_manifest(path, root=tmp_path)
    dataset = VideoDataset(manifest, buckets=BucketConfig([Bucket(32, 32, 8, 2), Bucket(32, 32, 1, 1)]))
    (tmp_path / "v1.mp4").write_bytes(b"corrupted after the bucket scan")
    with pytest.warns(UserWarning, match="v1.mp4"):
        sample = dataset[1]
    assert int(sample["index"]) == 3 and sample["video"].shape == (3, 8, 32, 32)


def test_sampler_and_dataset_make_batches(synth):
    config = BucketConfig.grid(
        resolution=32, aspect_ratios=["1:1"], num_frames=[8], batch_size=4, image_batch_size=3
    )
    dataset = VideoDataset(synth.train_manifest, buckets=config, root=synth.root)
    sampler = BucketBatchSampler(dataset.assignment, seed=0, image_ratio=0.25, warn=False)
    shapes = set()
    for batch_indices in list(sampler)[:6]:
        batch = collate([dataset[i] for i in batch_indices])
        shapes.add(batch["video"].shape)
        assert len(batch["caption"]) == len(batch_indices) and batch["index"].shape == (len(batch_indices),)
    assert shapes <= {(4, 3, 8, 32, 32), (3, 3, 1, 32, 32)}


def test_text_cache_and_dropout(synth, tmp_path, text_cache_writer):
    manifest = load_manifest(synth.train_manifest)
    keys = {
        r.video.rsplit(".", 1)[0] + ".npz": {"ul2": 2 + i % 3, "byt5": 3}
        for i, r in enumerate(manifest.rows[:4])
    }
    keys["__null__.npz"] = {"ul2": 1, "byt5": 1}
    written = text_cache_writer(
        tmp_path / "text", keys, dims={"ul2": 8, "byt5": 4}, max_lengths={"ul2": 6, "byt5": 5}
    )
    dataset = VideoDataset(manifest, num_frames=4, size=16, text_cache=tmp_path / "text")
    assert dataset.output_keys == [
        "video",
        "ul2_emb",
        "ul2_mask",
        "byt5_emb",
        "byt5_mask",
        "caption",
        "fps",
        "index",
        "substituted",
    ]
    assert list(dataset[0]) == dataset.output_keys
    for i in range(4):
        sample = dataset[i]
        key = manifest.rows[i].video.rsplit(".", 1)[0] + ".npz"
        n = 2 + i % 3
        assert sample["ul2_emb"].shape == (6, 8) and sample["byt5_emb"].shape == (5, 4)
        np.testing.assert_array_equal(sample["ul2_emb"][:n], written["ul2"][key])
        assert sample["ul2_mask"].tolist() == [1] * n + [0] * (6 - n)
        assert sample["caption"] == manifest.rows[i].caption
    dropped = VideoDataset(manifest, num_frames=4, size=16, text_cache=tmp_path / "text", text_drop_prob=1.0)[
        2
    ]
    assert dropped["caption"] == "" and dropped["ul2_mask"].tolist() == [1, 0, 0, 0, 0, 0]
    np.testing.assert_array_equal(dropped["ul2_emb"][0], written["ul2"]["__null__.npz"][0])
    half = VideoDataset(manifest, num_frames=4, size=16, text_cache=tmp_path / "text", text_drop_prob=0.5)
    drops = [half.get(0, epoch=e)["caption"] == "" for e in range(40)]
    assert 8 <= sum(drops) <= 32
    patient = VideoDataset(
        manifest, num_frames=4, size=16, text_cache=tmp_path / "text", max_retries=len(manifest)
    )
    with pytest.warns(UserWarning, match="cache file not found"):
        assert int(patient[5]["index"]) == 0  # no embedding for 5 and later ones: skipped like bad files


def test_latent_cache_serves_latents(tmp_path):
    rng = np.random.default_rng(0)
    writer = LatentCacheWriter(
        tmp_path / "lat", scaling_factor=1.5, shift_factor=0.1, latent_channels=4, frames=32, size=(32, 32)
    )
    names = ["a.mp4", "b.mp4", "c.png", "d.mp4"]
    shapes = {"a.mp4": (4, 4, 4, 4), "b.mp4": (4, 4, 4, 4), "c.png": (4, 1, 4, 4), "d.mp4": (4, 2, 2, 6)}
    means = {}
    for name in names:
        means[name] = rng.standard_normal(shapes[name]).astype(np.float32)
        writer.write(name, means[name], np.full(shapes[name], 1e-3, np.float32))
    path = _manifest(tmp_path, names)  # the videos themselves do not exist: latents only
    dataset = VideoDataset(path, latent_cache=tmp_path / "lat", num_latent_frames=2, start="center")
    sample = dataset[0]
    assert "video" not in sample and sample["latent"].shape == (4, 2, 4, 4)
    np.testing.assert_allclose(
        sample["latent"], means["a.mp4"][:, 1:3], atol=0.01
    )  # centred window of 2 of 4
    config = BucketConfig([Bucket(32, 32, 16, 2), Bucket(32, 32, 1, 1), Bucket(16, 48, 9, 1)])
    bucketed = VideoDataset(path, latent_cache=tmp_path / "lat", buckets=config, start="center")
    assert bucketed.bucket_ids.tolist() == [0, 0, 1, 2]
    assert bucketed[0]["latent"].shape == (4, 2, 4, 4) and bucketed[2]["latent"].shape == (4, 1, 4, 4)
    assert bucketed[3]["latent"].shape == (4, 2, 2, 6)
    z1, z2 = (VideoDataset(path, latent_cache=tmp_path / "lat", seed=s)[1]["latent"] for s in (0, 0))
    np.testing.assert_array_equal(z1, z2)


def test_dataset_pickles_for_worker_processes(synth):
    import pickle

    dataset = VideoDataset(synth.train_manifest, num_frames=4, size=16, hflip=True, random_crop=True, seed=3)
    clone = pickle.loads(pickle.dumps(dataset))
    for i in (0, 3):
        np.testing.assert_array_equal(clone.get(i, epoch=2)["video"], dataset.get(i, epoch=2)["video"])
