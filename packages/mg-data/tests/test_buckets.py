"""Bucket configs, assignment and the bucket batch sampler (determinism, sharding, resume, ratios, stats)."""

from __future__ import annotations

import math
import warnings
from collections import Counter

import numpy as np
import pytest

from mg_data import (
    Bucket,
    BucketBatchSampler,
    BucketConfig,
    FrameSampling,
    MediaInfo,
    assign_buckets,
    parse_aspect_ratio,
)


def test_grid_sizes_in_area_and_short_side_modes():
    config = BucketConfig.grid(
        resolution=256,
        aspect_ratios=["1:1", "16:9", "9:16"],
        num_frames=[16, 32],
        batch_size={16: 4, 32: 2},
        image_batch_size=8,
    )
    sizes = {(b.height, b.width, b.num_frames, b.batch_size) for b in config.buckets}
    # area mode: h = 256 * sqrt(9/16) = 192, w = 256 / sqrt(9/16) = 341.3 -> 336 (multiple of 16)
    expected_sizes = [(256, 256), (192, 336), (336, 192)]
    assert sizes == {(h, w, t, bs) for h, w in expected_sizes for t, bs in ((16, 4), (32, 2), (1, 8))}
    short = BucketConfig.grid(resolution=256, aspect_ratios=["16:9", "9:16"], size_mode="short_side")
    assert [(b.height, b.width) for b in short.buckets] == [(256, 448), (448, 256)]  # 455.1 -> 448
    assert parse_aspect_ratio("16:9") == pytest.approx(9 / 16) and parse_aspect_ratio(0.5) == 0.5
    with pytest.raises(ValueError, match="no entry for 32"):
        BucketConfig.grid(num_frames=[16, 32], batch_size={16: 1})


def test_from_dict_and_yaml(tmp_path):
    (tmp_path / "grid.yaml").write_text(
        "grid:\n  resolution: 64\n  aspect_ratios: ['1:1']\n  num_frames: [8]\n  batch_size: {8: 3}\n  image_batch_size: 5\n"
    )
    config = BucketConfig.from_yaml(tmp_path / "grid.yaml")
    assert [(b.name, b.batch_size) for b in config.buckets] == [("8f_64x64", 3), ("img_64x64", 5)]
    listed = BucketConfig.from_dict(config.to_dict())
    assert listed.buckets == config.buckets
    (tmp_path / "bad.yaml").write_text("buckets:\n  - {height: 64, width: 64, frames: 8, batch_size: 1}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: buckets\[0\].*frames"):
        BucketConfig.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="exactly one of"):
        BucketConfig.from_dict({"grid": {}, "buckets": []})
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        Bucket(64, 64, 8, 0)
    with pytest.raises(ValueError, match="duplicate bucket names"):
        BucketConfig([Bucket(8, 8, 1, 1), Bucket(8, 8, 1, 2)])


CONFIG = BucketConfig(
    [
        Bucket(64, 64, 16, 2),
        Bucket(64, 64, 8, 4),
        Bucket(48, 80, 16, 2),
        Bucket(48, 80, 8, 4),
        Bucket(64, 64, 1, 8),
    ]
)


def _video(frames, h, w, fps=8.0):
    return MediaInfo(frames, h, w, fps)


def test_assignment_nearest_aspect_then_longest_fitting_clip():
    sampling = FrameSampling(stride=2)
    cases = [
        (
            _video(100, 720, 1280),
            "16f_48x80",
        ),  # 16:9 is nearer 48:80 (0.6) than 1:1; 31 frames needed, has 100
        (_video(20, 720, 1280), "8f_48x80"),  # 16 frames at stride 2 need 31; 8 need 15
        (_video(40, 500, 480), "16f_64x64"),
        (MediaInfo(1, 300, 200, 1.0, is_image=True), "img_64x64"),
    ]
    for info, name in cases:
        index, reason = CONFIG.assign(info, sampling)
        assert reason == "" and CONFIG[index].name == name, (info, reason)
    index, reason = CONFIG.assign(_video(10, 64, 64), sampling)
    assert index is None and reason == "too short: 10 frames, shortest bucket needs 15"
    index, _ = CONFIG.assign(_video(10, 64, 64), FrameSampling(stride=2, short_policy="loop"))
    assert CONFIG[index].name == "8f_64x64"
    videos_only = BucketConfig([Bucket(64, 64, 8, 1)])
    assert videos_only.assign(MediaInfo(1, 8, 8, 1.0, True), sampling) == (None, "no image bucket")
    small = BucketConfig([Bucket(64, 64, 8, 1)], max_upscale=2.0)
    assert small.assign(_video(30, 32, 32), FrameSampling())[0] == 0
    assert small.assign(_video(30, 20, 40), FrameSampling())[1].startswith("too small: 20x40")


def test_assignment_by_target_fps_uses_seconds():
    # 16 frames at 8 fps span 1.875 s: 46 source frames at 24 fps, 16 at 8 fps
    sampling = FrameSampling(fps=8.0)
    assert CONFIG[CONFIG.assign(_video(46, 64, 64, fps=24.0), sampling)[0]].num_frames == 16
    assert CONFIG[CONFIG.assign(_video(45, 64, 64, fps=24.0), sampling)[0]].num_frames == 8


def test_latent_assignment_needs_exact_size():
    assert CONFIG[CONFIG.assign_latent((16, 2, 8, 8))[0]].name == "16f_64x64"
    assert CONFIG[CONFIG.assign_latent((16, 1, 8, 8))[0]].name == "img_64x64"
    assert CONFIG[CONFIG.assign_latent((16, 1, 6, 10))[0]].name == "8f_48x80"  # no image bucket at that size
    # a clip of at most 8 frames has one latent frame too; known as a video, it stays in video buckets
    assert CONFIG[CONFIG.assign_latent((16, 1, 8, 8), is_image=False)[0]].name == "8f_64x64"
    assert CONFIG.assign_latent((16, 2, 9, 9)) == (None, "no bucket of latent size 9x9")


def _ids(counts):
    """Bucket ids laid out with the given number of samples per bucket, shuffled, plus some dropped (-1)."""
    ids = np.concatenate([np.full(n, b) for b, n in enumerate(counts)] + [np.full(5, -1)])
    return np.random.default_rng(0).permutation(ids)


def _epoch(sampler):
    return [list(batch) for batch in sampler]


def test_batches_are_single_bucket_and_cover_each_bucket_once():
    ids = _ids([13, 9, 4, 0, 17])
    sampler = BucketBatchSampler(ids, CONFIG, seed=5, warn=False)
    batches = _epoch(sampler)
    seen = Counter()
    for batch in batches:
        buckets = {int(ids[i]) for i in batch}
        assert len(buckets) == 1
        bucket = buckets.pop()
        assert len(batch) == CONFIG[bucket].batch_size
        seen.update(batch)
    assert max(seen.values()) == 1  # no repeats within an epoch
    # naive count of what fits: floor(n / batch) * batch per bucket
    for b, n in enumerate([13, 9, 4, 0, 17]):
        used = sum(1 for i in seen if ids[i] == b)
        assert used == (n // CONFIG[b].batch_size) * CONFIG[b].batch_size
    assert (
        len(batches)
        == len(sampler)
        == sum(n // CONFIG[b].batch_size for b, n in enumerate([13, 9, 4, 0, 17]))
    )
    assert sampler.epoch == 1 and sampler.position == 0


def test_deterministic_by_seed_and_epoch():
    ids = _ids([13, 9, 4, 0, 17])
    a, b, c = (BucketBatchSampler(ids, CONFIG, seed=s, warn=False) for s in (1, 1, 2))
    first_a, first_b, first_c = _epoch(a), _epoch(b), _epoch(c)
    assert first_a == first_b and first_a != first_c
    assert _epoch(a) != first_a  # the next epoch is reshuffled
    b.set_epoch(1)
    a.set_epoch(1)
    assert _epoch(a) == _epoch(b)
    unshuffled = _epoch(BucketBatchSampler(ids, CONFIG, shuffle=False, warn=False))
    assert unshuffled[0] == sorted(unshuffled[0])


@pytest.mark.parametrize("world_size", [2, 3])
def test_sharding_splits_global_batches_across_ranks(world_size):
    ids = _ids([30, 21, 10, 7, 40])
    samplers = [
        BucketBatchSampler(ids, CONFIG, seed=9, rank=r, world_size=world_size, warn=False)
        for r in range(world_size)
    ]
    assert len({len(s) for s in samplers}) == 1
    per_rank = [_epoch(s) for s in samplers]
    everything = []
    for step in range(len(samplers[0])):
        batches = [per_rank[r][step] for r in range(world_size)]
        buckets = {int(ids[i]) for batch in batches for i in batch}
        assert len(buckets) == 1  # every rank works on the same bucket (same shapes) at each step
        assert samplers[0].batch_bucket(0, step) == CONFIG[buckets.pop()]
        step_samples = [i for batch in batches for i in batch]
        assert len(set(step_samples)) == len(step_samples)
        everything += step_samples
    assert len(set(everything)) == len(everything)
    for b, n in enumerate([30, 21, 10, 7, 40]):
        global_batch = CONFIG[b].batch_size * world_size
        assert sum(1 for i in everything if ids[i] == b) == (n // global_batch) * global_batch


def test_resume_continues_exactly():
    ids = _ids([13, 9, 4, 6, 17])
    continuous = BucketBatchSampler(ids, CONFIG, seed=4, warn=False)
    reference = _epoch(continuous) + _epoch(continuous)
    interrupted = BucketBatchSampler(ids, CONFIG, seed=4, warn=False)
    got = _epoch(interrupted)
    iterator = iter(interrupted)
    got += [next(iterator) for _ in range(3)]
    state = interrupted.state_dict()
    assert state["epoch"] == 1 and state["position"] == 3
    resumed = BucketBatchSampler(ids, CONFIG, seed=4, warn=False)
    resumed.load_state_dict(state)
    got += _epoch(resumed)
    assert got == reference
    assert _epoch(resumed) == _epoch(continuous)  # and the epoch after that too


def test_state_for_consumed_batches_handles_prefetching():
    ids = _ids([13, 9, 4, 6, 17])
    sampler = BucketBatchSampler(ids, CONFIG, seed=4, warn=False)
    epoch_len = len(sampler)
    reference = _epoch(BucketBatchSampler(ids, CONFIG, seed=4, warn=False)) + _epoch(
        sampler.__class__(ids, CONFIG, seed=4, epoch=1, warn=False)
    )
    _epoch(sampler)  # a loader ran a whole epoch ahead, the model consumed only epoch_len + 2 batches
    state = sampler.state_dict(consumed=epoch_len + 2)
    assert (state["epoch"], state["position"]) == (1, 2)
    resumed = BucketBatchSampler(ids, CONFIG, seed=4, warn=False)
    resumed.load_state_dict(state)
    assert _epoch(resumed) == reference[epoch_len + 2 :]


def test_resume_with_other_data_fails_clearly():
    sampler = BucketBatchSampler(_ids([13, 9, 4, 6, 17]), CONFIG, seed=4, warn=False)
    state = sampler.state_dict()
    other = BucketBatchSampler(_ids([13, 9, 4, 6, 18]), CONFIG, seed=4, warn=False)
    with pytest.raises(ValueError, match="another data layout"):
        other.load_state_dict(state)
    with pytest.warns(UserWarning, match="restarting epoch 0"):
        other.load_state_dict({**state, "position": 2}, strict=False)
    assert other.position == 0
    wider = BucketBatchSampler(_ids([13, 9, 4, 6, 17]), CONFIG, seed=4, world_size=2, warn=False)
    with pytest.raises(ValueError, match="another data layout"):
        wider.load_state_dict(state)


def test_a_state_resumes_on_another_rank_count_with_the_same_global_batch():
    """One process with batches of 2/4/8 and two ranks with 1/2/4 form the same epochs: a state saved by either
    continues on the other, and the two ranks' slices make up the single process's batches."""
    ids = _ids([13, 9, 4, 6, 17])
    halved = BucketConfig(
        [Bucket(b.height, b.width, b.num_frames, b.batch_size // 2) for b in CONFIG.buckets]
    )
    single = BucketBatchSampler(ids, CONFIG, seed=4, warn=False)
    for _ in range(3):
        next(iter(single))
    state = single.state_dict()
    ranks = [BucketBatchSampler(ids, halved, seed=4, rank=r, world_size=2, warn=False) for r in range(2)]
    for sampler in ranks:
        sampler.load_state_dict(state)
    rest = _epoch(single)
    shards = [_epoch(sampler) for sampler in ranks]
    assert rest and [a + b for a, b in zip(*shards, strict=True)] == rest
    back = BucketBatchSampler(ids, CONFIG, seed=4, warn=False)
    back.load_state_dict(ranks[0].state_dict())  # and the other way round
    assert back.epoch == ranks[0].epoch and back.position == ranks[0].position


def test_image_ratio_is_exact():
    ids = _ids([40, 0, 0, 0, 24])  # 20 video batches of 2, 3 image batches of 8
    for ratio, expected_images in ((0.5, 20), (0.2, 5), (0.0, 0)):
        sampler = BucketBatchSampler(ids, CONFIG, seed=1, image_ratio=ratio, warn=False)
        batches = _epoch(sampler)
        images = [b for b in batches if ids[b[0]] == 4]
        assert len(images) == expected_images and len(batches) - len(images) == 20
        if ratio == 0.5:
            # 20 image batches from a pool of 3 per pass: every image appears before any appears twice
            counts = Counter(i for b in images for i in b)
            assert max(counts.values()) - min(counts.values()) <= 1 and len(counts) == 24
    only_images = _epoch(BucketBatchSampler(ids, CONFIG, seed=1, image_ratio=1.0, warn=False))
    assert len(only_images) == 3 and all(ids[b[0]] == 4 for b in only_images)


def test_drop_last_false_pads_and_stats_report():
    ids = _ids([5, 0, 0, 0, 3])
    sampler = BucketBatchSampler(ids, CONFIG, drop_last=False, warn=False)
    batches = _epoch(sampler)
    assert sorted(len(b) for b in batches) == [2, 2, 2, 8]
    assert {i for b in batches for i in b} == set(np.flatnonzero(ids >= 0).tolist())
    stats = {s.name: s for s in sampler.stats()}
    assert (stats["16f_64x64"].batches, stats["16f_64x64"].padded) == (3, 1)
    assert (stats["img_64x64"].batches, stats["img_64x64"].padded) == (1, 5)
    dropping = {s.name: s for s in BucketBatchSampler(ids, CONFIG, warn=False).stats()}
    assert (dropping["16f_64x64"].used, dropping["16f_64x64"].dropped) == (4, 1)
    assert (dropping["img_64x64"].used, dropping["img_64x64"].dropped) == (0, 3)


def test_warnings_and_empty_epoch_error():
    ids = _ids([5, 0, 0, 0, 3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        BucketBatchSampler(ids, CONFIG)
    messages = [str(w.message) for w in caught]
    assert "bucket 8f_64x64 holds no samples" in messages
    assert "bucket img_64x64: 3 samples < global batch 8: all dropped every epoch" in messages
    with pytest.raises(ValueError, match=r"(?s)no batch to yield:\n.*16f_64x64\s+1"):
        BucketBatchSampler(_ids([1, 0, 0, 0, 0]), CONFIG, warn=False)


def test_assign_buckets_reports_reasons_and_feeds_the_sampler():
    infos = [_video(40, 64, 64)] * 6 + [
        _video(3, 64, 64),
        RuntimeError("x.mp4: broken"),
        MediaInfo(1, 9, 9, 1.0, True),
    ]
    assignment = assign_buckets(infos, CONFIG, FrameSampling())
    assert assignment.counts()["16f_64x64"] == 6 and assignment.counts()["img_64x64"] == 1
    assert assignment.drop_reasons() == {"too short": 1, "unreadable": 1}
    sampler = BucketBatchSampler(assignment, warn=False)
    assert "too short: 1" in sampler.report() and "unreadable: 1" in sampler.report()
    assert len(sampler) == 3 and math.isclose(sampler.stats()[0].used, 6)
