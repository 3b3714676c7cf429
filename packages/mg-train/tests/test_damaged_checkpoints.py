"""Damaged checkpoints and crash leftovers, through `python -m mg_train train` as an operator meets them: a
truncated weights file in the newest checkpoint makes `resume=auto` fall back to the previous one with a warning
(and the result equals resuming from that one directly); an explicit damaged checkpoint is refused by name;
folders and temporaries left by a writer killed mid-save are removed at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mg_data.atomic import temp_prefix
from mg_train import testing
from mg_train.checkpoint import CheckpointManager, load_checkpoint
from mg_train.config.loader import to_dict


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return testing.make_training_data(tmp_path_factory.mktemp("damaged") / "data", n=8)


def train(data, out: Path, steps: int, resume: str | None = "auto") -> subprocess.CompletedProcess:
    cfg = testing.transformer_train_config(
        data,
        out,
        train={
            "steps": steps,
            "save_every": 1,
            "keep_last": 5,
            "log_every": 1,
            "jit": False,
            "resume": resume,
        },
    )
    config = out.parent / f"{out.name}-{steps}.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    env = {**os.environ, "GLOG_v": "3"}
    return subprocess.run(
        [sys.executable, "-m", "mg_train", "train", "-c", str(config)],
        capture_output=True,
        text=True,
        env=env,
    )


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(data, tmp_path):
    out = tmp_path / "run"
    first = train(data, out, 3)
    assert first.returncode == 0, first.stderr[-3000:]
    manager = CheckpointManager(out / "checkpoints")
    assert [p.name for p in manager.list()] == ["step_00000001", "step_00000002", "step_00000003"]
    weights = manager.list()[-1] / "rank_00000" / "model.safetensors"
    weights.write_bytes(
        weights.read_bytes()[: weights.stat().st_size // 2]
    )  # a disk that filled up mid-write

    explicit = train(data, tmp_path / "explicit", 4, resume=str(manager.list()[-1]))
    assert explicit.returncode != 0
    assert "model.safetensors does not match the SHA-256" in explicit.stderr

    # leftovers of a writer killed mid-save: a partial step, a swapped-out step, an export temporary
    (out / "checkpoints" / ".step_00000004.partial" / "rank_00000").mkdir(parents=True)
    (out / "checkpoints" / ".step_00000002.old").mkdir()
    leftover = out / (temp_prefix(out / "transformer").replace(f"-{os.getpid()}-", f"-{dead_pid()}-") + "abc")
    leftover.mkdir()
    resumed = train(data, out, 4)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: skipping" in resumed.stderr and "step_00000003" in resumed.stderr
    assert "removed 3 leftover(s)" in resumed.stderr
    assert not leftover.exists()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    steps = [m["step"] for m in testing.run_metrics(out) if "loss" in m]
    assert steps == [1, 2, 3, 4]  # lines past the checkpoint resumed from (step 2) are replaced

    # the same as resuming from step 2 directly
    reference = tmp_path / "reference"
    assert train(data, reference, 2).returncode == 0
    assert train(data, reference, 4).returncode == 0
    got, _ = load_checkpoint(manager.latest())
    want, _ = load_checkpoint(CheckpointManager(reference / "checkpoints").latest())
    for key, value in want["model"].items():
        np.testing.assert_allclose(got["model"][key], value, rtol=1e-6, atol=1e-7, err_msg=key)


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(data, tmp_path):
    out = tmp_path / "run"
    assert train(data, out, 1).returncode == 0
    for path in CheckpointManager(out / "checkpoints").list():
        (path / "rank_00000" / "optimizer.safetensors").write_bytes(b"")
    again = train(data, out, 2)
    assert again.returncode != 0
    assert "none of the 1 checkpoints" in again.stderr and "train.resume=null" in again.stderr


@pytest.mark.parametrize("new_save_finished", [True, False])
def test_a_crash_between_the_two_renames_of_a_resave_keeps_the_step(tmp_path, new_save_finished):
    # finalize() re-saving step 2 renames step_00000002 -> .step_00000002.old, then .partial -> step_00000002;
    # a crash between the two leaves no step_00000002 at all
    manager = CheckpointManager(tmp_path)
    for name, label in ((".step_00000002.old", "old"), (".step_00000002.partial", "new")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "label.txt").write_text(label)
    (tmp_path / ".step_00000002.old" / "manifest.json").write_text("{}")
    if new_save_finished:
        (tmp_path / ".step_00000002.partial" / "manifest.json").write_text("{}")

    manager.remove_leftovers()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000002"]
    expected = "new" if new_save_finished else "old"
    assert (tmp_path / "step_00000002" / "label.txt").read_text() == expected
