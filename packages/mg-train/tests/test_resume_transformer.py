"""Resume is exact: a real `python -m mg_train train` subprocess stopped by SIGTERM saves a checkpoint, and
resuming from it reaches the same weights, optimizer state, EMA and metrics as a run that never stopped (with
gradient accumulation, EMA, text dropout, validation and plateau LR halving all on, across an epoch boundary)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from mg_train import testing
from mg_train.checkpoint import CheckpointManager, load_checkpoint
from mg_train.config.loader import to_dict

H = SimpleNamespace(
    make_data=testing.make_training_data,
    train_config=testing.transformer_train_config,
    metrics=testing.run_metrics,
    weights=testing.final_weights,
)


def resume_config(data, out: Path, steps: int):
    return H.train_config(
        data,
        out,
        data={
            "manifest": data.train,
            "val_manifest": data.val,
            "frames": 16,
            "size": [32, 32],
            "batch_size": 2,
        },
        optim={
            "lr": 2e-2,
            "warmup_steps": 3,
            "grad_accum": 2,
            "ema_decay": 0.9,
            "plateau_factor": 0.5,
            "plateau_patience": 0,
        },
        flow={"text_dropout": 0.25, "val_timesteps": 2},
        train={"steps": steps, "val_every": 2, "val_batches": 1, "log_every": 1, "save_every": 10_000},
    )


def wait_for_steps(path: Path, count: int, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if path.is_file() and sum('"loss"' in line for line in path.read_text().splitlines()) >= count:
            return
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {count} training steps within {timeout} s:\n{log.read_text()[-3000:]}")


def sigterm_after(cfg, steps: int, tmp_path: Path) -> str:
    """Run `python -m mg_train train` on `cfg`, send SIGTERM once `steps` steps are logged, expect exit 130 (stopped,
    resumable); returns the log."""
    config_file = tmp_path / "train.yaml"
    config_file.write_text(yaml.safe_dump(to_dict(cfg)))
    log = tmp_path / "train.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mg_train", "train", "--config", str(config_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GLOG_v": "3"},
        )
    try:
        wait_for_steps(Path(cfg.train.output_dir) / "metrics.jsonl", steps, proc, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    return log.read_text()


def comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time"} for row in rows]


def test_sigterm_checkpoint_resumes_to_the_uninterrupted_run(tmp_path):
    from mg_train.transformer_train import run

    data = H.make_data(tmp_path / "data", n=10)  # 9 training clips: 4 batches of 2 per epoch
    stopped_dir = tmp_path / "stopped"
    log = sigterm_after(resume_config(data, stopped_dir, 10_000), 3, tmp_path)
    assert "stopped by SIGTERM" in log
    checkpoint = CheckpointManager(stopped_dir / "checkpoints").latest()
    stopped_at = json.loads((checkpoint / "state.json").read_text())["step"]
    assert stopped_at >= 3
    assert not (stopped_dir / "transformer").exists()  # stopped, not finished

    total = stopped_at + 3  # crosses an epoch boundary (4 optimizer steps per 2 epochs with grad_accum 2)
    run(resume_config(data, stopped_dir, total))  # resume="auto": continues from the SIGTERM checkpoint
    run(resume_config(data, tmp_path / "straight", total))

    resumed, _ = load_checkpoint(stopped_dir / "checkpoints" / f"step_{total:08d}")
    straight, _ = load_checkpoint(tmp_path / "straight" / "checkpoints" / f"step_{total:08d}")
    assert resumed.keys() == straight.keys() == {"model", "optimizer", "ema"}
    for group in straight:
        assert resumed[group].keys() == straight[group].keys()
        for key, value in straight[group].items():
            np.testing.assert_allclose(
                resumed[group][key], value, rtol=0, atol=1e-6, err_msg=f"{group}: {key}"
            )
    rows_resumed, rows_straight = H.metrics(stopped_dir), H.metrics(tmp_path / "straight")
    _assert_close(rows_resumed, rows_straight)
    assert any(row.get("lr_reduced") for row in rows_straight)  # the plateau state mattered


def _assert_close(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(comparable(a), comparable(b), strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=1e-5), (x, y)


def test_a_stop_between_micro_batches_drops_the_partial_step_and_resumes_exactly(tmp_path):
    """With long gradient accumulation (8 micro-batches a step) SIGTERM does not wait for the step to end: the
    run stops before the next micro-batch, saves the last whole step (step 1, with the sampler rewound to the
    start of step 2) and exits 130; resuming reaches the uninterrupted run's weights."""
    from mg_train.transformer_train import run

    data = H.make_data(tmp_path / "data", n=10)

    def config(out: Path, steps: int):
        return H.train_config(
            data,
            out,
            optim={"lr": 1e-2, "warmup_steps": 0, "grad_accum": 8},
            train={"steps": steps, "save_every": 10_000, "log_every": 1, "jit": False},
        )

    stopped_dir = tmp_path / "stopped"
    log = sigterm_after(config(stopped_dir, 2), 1, tmp_path)  # SIGTERM as step 2's micro-batches begin
    assert "stopped by SIGTERM at step 1" in log, log[-2000:]
    assert [m["step"] for m in H.metrics(stopped_dir) if "loss" in m] == [1]
    assert CheckpointManager(stopped_dir / "checkpoints").latest().name == "step_00000001"

    run(config(stopped_dir, 2))
    run(config(tmp_path / "straight", 2))
    resumed, _ = load_checkpoint(stopped_dir / "checkpoints" / "step_00000002")
    straight, _ = load_checkpoint(tmp_path / "straight" / "checkpoints" / "step_00000002")
    for key, value in straight["model"].items():
        np.testing.assert_allclose(resumed["model"][key], value, rtol=0, atol=1e-6, err_msg=key)
