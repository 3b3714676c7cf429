"""One run per output folder, through `python -m mg_train train` as an operator meets it: a fresh run in a folder
that holds another run fails unless asked, and when asked never prunes or resumes the older run's checkpoints; a
second job writing the same folder fails at once naming the holder; a lock left by a killed job is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mg_train import testing
from mg_train.checkpoint import MANIFEST
from mg_train.config.loader import to_dict


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return testing.make_training_data(tmp_path_factory.mktemp("folder") / "data", n=8)


def train(data, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    cfg = testing.transformer_train_config(data, out, train={"log_every": 1, "jit": False})
    config = out.parent / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    return subprocess.run(
        [sys.executable, "-m", "mg_train", "train", "-c", str(config), *overrides],
        capture_output=True,
        text=True,
        env={**os.environ, "GLOG_v": "3"},
    )


def checkpoints(out: Path) -> list[tuple[str, int]]:
    """(run id, step) of every checkpoint in the folder."""
    found = []
    for path in sorted((out / "checkpoints").glob("step_*")):
        manifest = json.loads((path / MANIFEST).read_text())
        found.append((manifest["run_id"], manifest["step"]))
    return found


def test_a_new_run_never_prunes_or_resumes_the_older_runs_checkpoints(data, tmp_path):
    out = tmp_path / "run"
    first = train(data, out, "train.steps=6", "train.save_every=2", "train.keep_last=2")
    assert first.returncode == 0, first.stderr[-3000:]
    old = json.loads((out / "run.json").read_text())["run_id"]
    assert checkpoints(out) == [(old, 4), (old, 6)]

    refused = train(data, out, "train.resume=null", "train.steps=2", "train.save_every=1")
    assert refused.returncode == 2
    assert "already holds a run" in refused.stderr and "train.new_run_in_used_folder=true" in refused.stderr
    assert checkpoints(out) == [(old, 4), (old, 6)]

    second = train(
        data,
        out,
        "train.resume=null",
        "train.steps=2",
        "train.save_every=1",
        "train.new_run_in_used_folder=true",
    )
    assert second.returncode == 0, second.stderr[-3000:]
    new = json.loads((out / "run.json").read_text())["run_id"]
    assert new != old
    assert sorted(checkpoints(out), key=lambda c: c[1]) == [(new, 1), (new, 2), (old, 4), (old, 6)]

    resumed = train(data, out, "train.steps=3", "train.save_every=1", "train.keep_last=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 2/3" in resumed.stderr  # the new run's step 2, not the old run's step 6
    assert sorted(checkpoints(out), key=lambda c: c[1]) == [(new, 2), (new, 3), (old, 4), (old, 6)]
    assert not (out / ".lock").exists()  # released at the end


def test_a_second_writer_fails_at_once_and_a_dead_writers_lock_is_taken_over(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": "now"}))
    busy = train(data, out, "train.steps=1")
    assert busy.returncode == 2
    assert f"in use by pid {os.getpid()} on host {socket.gethostname()}" in busy.stderr
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "since": "then"}))
    done = train(data, out, "train.steps=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not lock.exists()
