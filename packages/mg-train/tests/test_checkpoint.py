"""Checkpoints are complete or absent, keep the last K, round-trip exactly and never hold non-finite weights."""

from __future__ import annotations

import numpy as np
import pytest

from mg_train.checkpoint import CheckpointManager, NonFiniteWeightsError, load_checkpoint


def _arrays(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"model": {"w": rng.standard_normal((3, 4)).astype(np.float32)}, "optimizer": {"m": rng.random(5)}}


def test_round_trip_and_keep_last(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    for step in (10, 20, 30):
        manager.save(step, _arrays(step), {"sampler": {"epoch": 1, "position": step}})
    assert [p.name for p in manager.list()] == ["step_00000020", "step_00000030"]
    arrays, state = load_checkpoint(manager.latest())
    expected = _arrays(30)
    np.testing.assert_array_equal(arrays["model"]["w"], expected["model"]["w"])
    np.testing.assert_array_equal(arrays["optimizer"]["m"], expected["optimizer"]["m"])
    assert state == {"step": 30, "sampler": {"epoch": 1, "position": 30}}


def test_incomplete_temporary_directories_are_ignored(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    manager.save(1, _arrays(1), {})
    (tmp_path / ".step_00000002.tmp-999").mkdir()  # what a crash mid-save leaves behind
    (tmp_path / "step_00000003").mkdir()  # a directory without state.json is not a checkpoint
    assert manager.latest().name == "step_00000001"


def test_resaving_a_step_replaces_it(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(5, _arrays(1), {"v": 1})
    manager.save(5, _arrays(2), {"v": 2})
    arrays, state = load_checkpoint(tmp_path / "step_00000005")
    assert state["v"] == 2
    np.testing.assert_array_equal(arrays["model"]["w"], _arrays(2)["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000005"]


def test_non_finite_weights_are_never_saved(tmp_path):
    arrays = _arrays(0)
    arrays["model"]["w"][1, 2] = np.nan
    with pytest.raises(NonFiniteWeightsError, match="model"):
        CheckpointManager(tmp_path).save(7, arrays, {})
    assert not any(tmp_path.iterdir())
