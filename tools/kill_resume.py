"""Kill a training run with SIGKILL at random moments, resume it each time, and compare the result with a run that
was never interrupted: the checkpoints, the lock, the leftovers of killed saves and resume must together give the
same weights, optimizer state and EMA.

    python tools/kill_resume.py [--kills 10] [--steps 20] [--seed 0] [--workdir DIR]

A tiny transformer trains `--steps` optimizer steps on synthetic caches (`mg_train.testing`), with gradient
accumulation, EMA and a checkpoint every step, through `python -m mg_train train` in its own process. The
uninterrupted run is timed first; then the same command runs `--kills` times, the k-th killed with SIGKILL at a
random moment (seeded) of step k x steps / (kills + 1) (its forward/backward, update, checkpoint or pruning), and
once more to the end. Prints every kill (when, and the latest
checkpoint afterwards) and the largest difference of every tensor group; exits 1 unless all are within 1e-6.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOLERANCE = 1e-6
STARTS = re.compile(r" at step \d+/\d+")


def write_config(data, out: Path, steps: int) -> Path:
    import yaml

    from mg_train import testing
    from mg_train.config.loader import to_dict

    cfg = testing.transformer_train_config(
        data,
        out,
        optim={"lr": 1e-2, "warmup_steps": 2, "grad_accum": 2, "ema_decay": 0.9},
        train={"steps": steps, "save_every": 1, "keep_last": 2, "log_every": 1, "jit": False},
    )
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return path


def start(config: Path, log: Path) -> subprocess.Popen:
    handle = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "mg_train", "train", "-c", str(config)],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "GLOG_v": "3"},
    )


def wait_for_training(log: Path, starts_before: int, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Until this attempt has printed where it starts ("... at step K/N"): the model is built, the loop begins."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(STARTS.findall(log.read_text(errors="replace"))) > starts_before:
            return
        time.sleep(0.05)


def training_seconds(out: Path) -> float:
    """Seconds the loop of a finished run took (metrics.jsonl's last `time`)."""
    import json

    lines = (out / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["time"])


def last_logged_step(out: Path) -> int:
    import json

    path = out / "metrics.jsonl"
    steps = (
        [json.loads(line).get("step", 0) for line in path.read_text().splitlines()] if path.is_file() else []
    )
    return max(steps, default=0)


def latest_step(out: Path) -> int | None:
    from mg_train.checkpoint import CheckpointManager

    latest = CheckpointManager(out / "checkpoints").latest()
    return None if latest is None else int(latest.name.split("_")[-1])


def compare(a: Path, b: Path) -> dict[str, float]:
    """Largest absolute difference per tensor group between two checkpoints."""
    import numpy as np

    from mg_train.checkpoint import load_checkpoint

    got, _ = load_checkpoint(a)
    want, _ = load_checkpoint(b)
    if got.keys() != want.keys():
        raise SystemExit(f"groups differ: {sorted(got)} vs {sorted(want)}")
    worst = {}
    for group, tensors in want.items():
        if got[group].keys() != tensors.keys():
            raise SystemExit(f"{group}: tensor names differ")
        worst[group] = max(float(np.max(np.abs(got[group][k] - v), initial=0.0)) for k, v in tensors.items())
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="folder for data and runs (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.workdir:
        return kill_and_resume(args, Path(args.workdir))
    root = Path(tempfile.mkdtemp(prefix="mg_kill_resume_"))
    try:
        return kill_and_resume(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def kill_and_resume(args: argparse.Namespace, root: Path) -> int:
    """Train once straight and once with `args.kills` SIGKILLs and resumes under `root`; 0 if they agree."""
    from mg_train import testing

    data = testing.make_training_data(root / "data", n=10)
    straight, killed = root / "straight", root / "killed"
    done = start(write_config(data, straight, args.steps), root / "straight.log").wait()
    if done != 0:
        print((root / "straight.log").read_text()[-3000:], file=sys.stderr)
        return 1
    duration = training_seconds(straight)
    print(f"uninterrupted: {args.steps} steps in {duration:.1f} s of training")
    config, log = write_config(data, killed, args.steps), root / "killed.log"
    log.touch()
    rng = random.Random(args.seed)
    for kill in range(1, args.kills + 1):
        # at a random moment (step, save or pruning) of step `target`: the kills spread over the whole run
        target = round(kill * args.steps / (args.kills + 1))
        starts_before = len(STARTS.findall(log.read_text(errors="replace")))
        proc = start(config, log)
        wait_for_training(log, starts_before, proc)
        while proc.poll() is None and last_logged_step(killed) < target - 1:
            time.sleep(0.02)
        delay = rng.uniform(0.0, duration / args.steps)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        code = proc.wait()
        state = "killed" if code == -signal.SIGKILL else f"had ended (exit {code})"
        print(
            f"kill {kill}: in step {target} (+{delay:.2f} s), {state}; latest checkpoint: step {latest_step(killed)}",
            flush=True,
        )
    final = start(config, log).wait()
    if final != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
        return 1
    worst = compare(
        killed / "checkpoints" / f"step_{args.steps:08d}", straight / "checkpoints" / f"step_{args.steps:08d}"
    )
    print("largest difference after resuming: " + ", ".join(f"{g} {v:.1e}" for g, v in worst.items()))
    same = all(v <= TOLERANCE for v in worst.values())
    print(f"{'equal' if same else 'DIFFERENT'} to the uninterrupted run (tolerance {TOLERANCE:g})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
