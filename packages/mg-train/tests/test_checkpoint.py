"""Checkpoints (one process): complete or absent, keep the last K, round-trip exactly, never hold non-finite
weights, carry a manifest with a checksum per file, and load checkpoints of mg-train 0.4. Multi-process saves,
resharding and crashes mid-save: test_sharded_checkpoints.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mindspore import Tensor, mint, nn
from safetensors.numpy import save_file

import mg_parallel as mp
from mg_parallel.safetensors_io import file_sha256
from mg_train.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointManager,
    NonFiniteWeightsError,
    load_checkpoint,
)
from mg_train.config.schema import OptimConfig
from mg_train.optim import OptimizerStep, build_optimizer
from mg_train.train_state import restore_training_checkpoint, save_training_checkpoint


def _trained(seed: int):
    """A small model with an optimizer that has taken one step (moments are not zero)."""
    import mindspore as ms

    ms.set_seed(seed)
    model = nn.SequentialCell([mint.nn.Linear(4, 6), mint.nn.Linear(6, 3)])
    ctx = mp.init_parallel()
    cfg = OptimConfig(lr=1e-2, ema_decay=0.5)
    zero, optimizer = build_optimizer(model, cfg, ctx)
    from mg_train.ema import EMA

    stepper = OptimizerStep(zero, optimizer, cfg, 10, ctx, EMA(zero.params, 0.5))
    grads = tuple(Tensor(np.full(p.shape, 0.1 * (seed + 1), np.float32)) for p in zero.params)
    stepper(grads, Tensor(np.float32(1.0)), 1, 0)
    return model, stepper, ctx


def _save(manager, step, seed, state=None):
    model, stepper, ctx = _trained(seed)
    path = save_training_checkpoint(manager, step, model, stepper, ctx, state or {}, {"kind": "test"})
    return path, model, stepper


def test_round_trip_keep_last_and_manifest(tmp_path):
    manager = CheckpointManager(tmp_path / "ckpt", keep_last=2)
    for step in (10, 20, 30):
        path, model, _ = _save(manager, step, step, {"sampler": {"epoch": 1, "position": step}})
    assert [p.name for p in manager.list()] == ["step_00000020", "step_00000030"]
    arrays, state = load_checkpoint(manager.latest())
    assert state["step"] == 30 and state["sampler"] == {"epoch": 1, "position": 30}
    assert arrays.keys() == {"model", "optimizer", "ema"}
    for p in model.get_parameters():
        np.testing.assert_array_equal(arrays["model"][p.name], p.asnumpy())
    assert {k.split(".", 1)[0] for k in arrays["optimizer"]} == {"exp_avg", "exp_avg_sq", "state_step"}
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["layout"] == {"dp": 1, "cp": 1, "sp": 1, "tp": 1} and manifest["model"] == {
        "kind": "test"
    }
    for group, entry in manifest["parts"]["0"].items():
        assert entry["sha256"] == file_sha256(path / entry["file"]), group
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step_00000020", "step_00000030"]


def test_a_loaded_checkpoint_restores_model_optimizer_and_ema(tmp_path):
    manager = CheckpointManager(tmp_path)
    path, model, stepper = _save(manager, 1, seed=3)
    fresh_model, fresh_stepper, ctx = _trained(seed=9)  # other values everywhere
    restore_training_checkpoint(path, fresh_model, fresh_stepper, ctx)
    for a, b in zip(model.get_parameters(), fresh_model.get_parameters(), strict=True):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    for (ka, a, _), (kb, b, _) in zip(
        stepper.zero.state_tensors(), fresh_stepper.zero.state_tensors(), strict=True
    ):
        assert ka == kb
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy(), err_msg=ka)
    for a, b in zip(stepper.ema.shadow, fresh_stepper.ema.shadow, strict=True):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_partial_folders_are_not_checkpoints_and_resaving_a_step_replaces_it(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=3)
    _save(manager, 1, seed=0)
    (tmp_path / ".step_00000002.partial" / "rank_00000").mkdir(parents=True)  # a save that crashed
    (tmp_path / "step_00000003").mkdir()  # a folder without a manifest is not a checkpoint
    assert manager.latest().name == "step_00000001"
    _, model, _ = _save(manager, 1, seed=5, state={"v": 2})
    arrays, state = load_checkpoint(tmp_path / "step_00000001")
    assert state["v"] == 2
    for p in model.get_parameters():
        np.testing.assert_array_equal(arrays["model"][p.name], p.asnumpy())


def test_non_finite_weights_are_never_saved(tmp_path):
    manager = CheckpointManager(tmp_path)
    model, stepper, ctx = _trained(seed=0)
    weight = model.get_parameters().__next__()
    weight.set_data(Tensor(np.full(weight.shape, np.nan, np.float32)))
    with pytest.raises(NonFiniteWeightsError, match="step 7"):
        save_training_checkpoint(manager, 7, model, stepper, ctx, {})
    assert not any(tmp_path.iterdir())  # neither a checkpoint nor a partial folder is left


def test_damaged_parts_are_detected_by_their_checksum(tmp_path):
    path, _, _ = _save(CheckpointManager(tmp_path), 4, seed=1)
    Checkpoint.open(path).verify()
    part = path / "rank_00000" / "model.safetensors"
    data = bytearray(part.read_bytes())
    data[-1] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"SHA-256 .* differs from the manifest"):
        Checkpoint.open(path).verify()


def test_checkpoints_of_mg_train_0_4_still_load(tmp_path):
    old = tmp_path / "step_00000003"
    old.mkdir()
    weights = {"0.weight": np.arange(24, dtype=np.float32).reshape(6, 4)}
    save_file(weights, str(old / "model.safetensors"))
    save_file({"exp_avg.0.weight": np.ones((6, 4), np.float32)}, str(old / "optimizer.safetensors"))
    (old / "state.json").write_text(json.dumps({"step": 3}))
    assert CheckpointManager(tmp_path).latest() == old
    arrays, state = load_checkpoint(old)
    assert state == {"step": 3}
    np.testing.assert_array_equal(arrays["model"]["0.weight"], weights["0.weight"])
