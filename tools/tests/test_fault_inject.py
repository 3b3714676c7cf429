"""A failing rank never hangs a distributed `mg-train train` job (2 ranks under msrun on CPU, real processes):
killed, raising or stuck, every rank exits within a bounded time, msrun exits non-zero, and the output names
the rank that failed. Faults come from tools/fault_inject.py; MS_NODE_TIMEOUT=10 bounds how long MindSpore's
scheduler waits for a vanished rank (its default is about 30 s)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mg_parallel.testing import free_port
from mg_train import testing
from mg_train.config.loader import to_dict

pytestmark = pytest.mark.multiprocess
ROOT = Path(__file__).resolve().parents[2]
BOUND = 90  # seconds from the fault to the end of the job (MS_NODE_TIMEOUT 10 s plus shutdown)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    data = testing.make_training_data(root / "data", n=10)
    cfg = testing.transformer_train_config(
        data, root / "run", parallel={"sp": 2}, train={"steps": 50, "save_every": 2, "log_every": 1}
    )
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    return path


def _launch(config_file: Path, out: Path, fault: list[str], *overrides: str) -> tuple[int, str, float]:
    """msrun, 2 ranks, the training command behind the fault injector; (exit code, output, seconds after the
    fault fired)."""
    env = {**os.environ, "GLOG_v": "3", "MS_NODE_TIMEOUT": "10"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
    cmd = [
        "msrun",
        "--worker_num=2",
        "--local_worker_num=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "--join=True",
        "--cluster_time_out=60",
        f"--log_dir={out / 'logs'}",
        "python",
        str(ROOT / "tools" / "fault_inject.py"),
        *fault,
        "--",
        "-m",
        "mg_train",
        "train",
        "-c",
        str(config_file),
        f"train.output_dir={out / 'run'}",
        *overrides,
    ]
    log = out / "msrun.out"
    out.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        proc = subprocess.Popen(
            cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=out, start_new_session=True
        )
    fired_at = None
    deadline = time.monotonic() + 400
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if fired_at is None and "fault_inject: rank" in log.read_text(errors="replace"):
                fired_at = time.monotonic()
            if fired_at is not None and time.monotonic() - fired_at > BOUND:
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
            pytest.fail(f"the job did not end within {BOUND} s of the fault:\n{log.read_text()[-4000:]}")
    text = log.read_text(errors="replace")
    assert fired_at is not None, text[-4000:]
    return proc.returncode, text, time.monotonic() - fired_at


def _no_workers_left(out: Path) -> None:
    left = subprocess.run(["pgrep", "-f", str(out / "run")], capture_output=True, text=True).stdout.split()
    assert not left, f"workers still running: {left}"


def test_a_killed_rank_ends_the_job_and_is_named(config_file, tmp_path):
    code, text, seconds = _launch(
        config_file, tmp_path, ["--rank", "1", "--at", "step", "--step", "3", "--fault", "kill"]
    )
    assert code != 0
    # msrun names the process that died first; each rank's first line maps its pid to the rank (MindSpore's
    # scheduler log may name either rank: msrun stops them all at once, and which misses its heartbeat first is
    # a race)
    died = re.findall(r"Worker process (\d+) exit with exception", text)
    ranks = dict(re.findall(r"train: rank (\d+) of 2 is pid (\d+) on ", text))
    assert sorted(ranks) == ["0", "1"], text[-3000:]
    assert died and died[0] == ranks["1"], text[-3000:]
    assert seconds < BOUND
    _no_workers_left(tmp_path)


def test_a_rank_whose_checkpoint_write_fails_ends_the_job_and_says_so(config_file, tmp_path):
    code, text, _ = _launch(
        config_file, tmp_path, ["--rank", "0", "--at", "checkpoint", "--step", "2", "--fault", "raise"]
    )
    assert code != 0
    assert "train: rank 0 of 2 failed after step 2: OSError: injected fault: the checkpoint of step 2" in text
    assert not list(
        (tmp_path / "run" / "checkpoints").glob("step_*")
    )  # nothing half-written became a checkpoint
    _no_workers_left(tmp_path)


def test_a_stuck_rank_is_ended_by_the_step_deadline(config_file, tmp_path):
    code, text, seconds = _launch(
        config_file,
        tmp_path,
        ["--rank", "1", "--at", "step", "--step", "3", "--fault", "hang"],
        "train.step_timeout=8",
    )
    assert code != 0
    assert "Timeout (0:00:08)!" in text  # train.step_timeout=8 fired on the stuck rank, with its traceback
    assert seconds < BOUND
    _no_workers_left(tmp_path)


def test_kill_resume_reaches_the_uninterrupted_weights(tmp_path):
    """tools/kill_resume.py as documented, with 2 kills: exit 0 and `equal` (it compares every tensor group)."""
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "kill_resume.py"),
            "--kills",
            "2",
            "--steps",
            "4",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "equal to the uninterrupted run" in done.stdout
    assert done.stdout.count("kill ") == 2
