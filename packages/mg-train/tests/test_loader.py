"""The batch loader: worker processes change nothing, and a resumed loader replays the continuous run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mg_data import BucketBatchSampler, BucketConfig, VideoDataset, make_synthetic_dataset
from mg_train.loader import BatchLoader


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), n=12, seed=3, size=32, num_frames=8)


def _loader(synth, num_workers=0):
    buckets = BucketConfig.grid(resolution=32, aspect_ratios=["1:1"], num_frames=[8], batch_size=2)
    dataset = VideoDataset(synth.train_manifest, buckets=buckets, seed=1, hflip=True)
    sampler = BucketBatchSampler(dataset.assignment, seed=5)
    return BatchLoader(dataset, sampler, keys=["video", "index"], num_workers=num_workers)


def _take(loader, n):
    return [{k: v.copy() for k, v in b.items()} for b in itertools.islice(iter(loader), n)]


def test_batches_cross_epochs_and_match_direct_dataset_access(synth):
    loader = _loader(synth)
    per_epoch = len(loader.sampler)
    batches = _take(loader, per_epoch + 2)
    first_epoch = np.concatenate([b["index"] for b in batches[:per_epoch]])
    assert sorted(first_epoch) == sorted(set(first_epoch))  # an epoch has no repeats
    sample = loader.dataset.get(int(batches[0]["index"][0]), epoch=0)
    np.testing.assert_array_equal(batches[0]["video"][0], sample["video"])
    assert batches[0]["video"].shape == (2, 3, 8, 32, 32)


def test_workers_give_identical_batches(synth):
    plain = _take(_loader(synth, 0), 5)
    workers = _take(_loader(synth, 2), 5)
    for a, b in zip(plain, workers, strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["video"], b["video"])


def test_resume_replays_the_continuous_run(synth):
    continuous = _take(_loader(synth), 9)
    first = _loader(synth)
    _take(first, 4)
    state = first.state_dict()
    resumed = _loader(synth)
    resumed.load_state_dict(state)
    for a, b in zip(continuous[4:], _take(resumed, 5), strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_array_equal(a["video"], b["video"])
