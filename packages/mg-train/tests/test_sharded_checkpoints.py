"""Sharded checkpoints with real processes (msrun on CPU): every rank writes its own pieces, and

- a run stopped by SIGTERM at step 3 on 4 ranks (dp2 x tp2, ZeRO-3, EMA) and resumed reaches the uninterrupted
  run's step-6 checkpoint: model, optimizer moments and EMA within 1e-6;
- the step-4 checkpoint of that layout resumed at dp4 (ZeRO-1) and in one process reaches the same step 6 within
  1e-5 (resharding on load; the global batch is the same);
- a rank killed (SIGKILL) in the middle of writing its part of step 4 leaves step 2 as the latest checkpoint
  and its unfinished folder hidden; the run resumes from step 2 (here in one process) to the same step 6.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mg_parallel.testing import CaseResults, DistributedRunError, run_distributed
from mg_train import testing
from mg_train.checkpoint import CheckpointManager, load_checkpoint

pytestmark = pytest.mark.multiprocess

MODEL = {**testing.TINY_MODEL, "num_heads": 4}
STEP = "step_{:08d}"


def config(data: SimpleNamespace, out: Path, world: int, parallel: dict, steps: int = 6):
    model_parallel = parallel.get("tp", 1) * parallel.get("cp", 1) * parallel.get("sp", 1)
    return testing.transformer_train_config(
        data,
        out,
        model={"preset": "tiny", "overrides": MODEL},
        data={
            "manifest": data.train,
            "frames": 16,
            "size": [32, 32],
            "batch_size": 4 // (world // model_parallel),
        },
        optim={"lr": 3e-3, "warmup_steps": 1, "ema_decay": 0.5},
        train={"steps": steps, "save_every": 2, "keep_last": 5, "log_every": 1},
        parallel=parallel,
    )


LAYOUT = {"tp": 2, "zero_stage": 3}  # dp2 x tp2 on 4 ranks


def _copy_checkpoint(src_run: Path, step: int, dst_run: Path, ctx) -> None:
    """Rank 0 copies one checkpoint into a fresh run folder; every rank waits for it."""
    from mg_train.engine import barrier

    if ctx.rank_id == 0:
        shutil.copytree(
            src_run / "checkpoints" / STEP.format(step), dst_run / "checkpoints" / STEP.format(step)
        )
    barrier(ctx)


def four_rank_suite(inputs: dict, root: str) -> dict:
    """Runs on every rank of the 4-rank launch."""
    import signal

    import mg_parallel as mp
    from mg_parallel.testing import run_cases
    from mg_train.engine import TrainingStopped
    from mg_train.progress import Progress
    from mg_train.runtime import setup_mindspore
    from mg_train.transformer_train import run

    setup_mindspore()
    data, root = SimpleNamespace(**inputs), Path(root)

    def straight() -> str:
        return str(run(config(data, root / "straight", 4, LAYOUT)))

    def stopped_then_resumed() -> str:
        original = Progress.update

        def update(self, step, **metrics):  # SIGTERM to rank 0 itself once step 3 is logged
            original(self, step, **metrics)
            if step == 3 and "loss" in metrics and mp.get_parallel_context().rank_id == 0:
                os.kill(os.getpid(), signal.SIGTERM)

        Progress.update = update
        try:
            run(config(data, root / "resumed", 4, LAYOUT))
            raise AssertionError("the SIGTERM did not stop the run")
        except TrainingStopped as stopped:
            stopped_at = stopped.step
        finally:
            Progress.update = original
        run(config(data, root / "resumed", 4, LAYOUT))  # resume="auto"
        return f"stopped at {stopped_at}"

    def resharded_dp4() -> str:
        _copy_checkpoint(root / "straight", 4, root / "dp4", mp.init_parallel())
        return str(run(config(data, root / "dp4", 4, {"zero_stage": 1})))

    return run_cases(
        {"straight": straight, "stopped_then_resumed": stopped_then_resumed, "dp4": resharded_dp4}
    )


def killed_mid_save_suite(inputs: dict, root: str) -> dict:
    """2 ranks (dp2, ZeRO-3): rank 1 dies half-way through writing its part of step 4."""
    import signal

    import mg_parallel as mp
    from mg_parallel import sharded
    from mg_train import train_state
    from mg_train.runtime import setup_mindspore
    from mg_train.transformer_train import run

    setup_mindspore()
    data, root = SimpleNamespace(**inputs), Path(root)
    original = sharded.write_part

    def write_part(path, entries, layout, rank, check_finite=True):
        if rank == 1 and "step_00000004" in str(path):

            def dying(read):
                def fetch():
                    os.kill(os.getpid(), signal.SIGKILL)

                return fetch

            entries = [entries[0], *[(k, s, dying(r)) for k, s, r in entries[1:]]]  # one piece, then death
        return original(path, entries, layout, rank, check_finite)

    train_state.write_part = write_part
    mp.init_parallel()
    run(config(data, root / "killed", 2, {"zero_stage": 3}))
    return {}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    data = testing.make_training_data(root / "data", n=12)
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in vars(data).items()}
    results = CaseResults(
        run_distributed(f"{__file__}:four_rank_suite", 4, args=(plain, str(root)), timeout=900)
    )
    return root, data, results


def _assert_checkpoints_equal(a: Path, b: Path, atol: float) -> None:
    arrays_a, state_a = load_checkpoint(a)
    arrays_b, state_b = load_checkpoint(b)
    assert arrays_a.keys() == arrays_b.keys() == {"model", "optimizer", "ema"}
    assert state_a["step"] == state_b["step"]
    for group in arrays_a:
        assert arrays_a[group].keys() == arrays_b[group].keys(), group
        for key, value in arrays_a[group].items():
            np.testing.assert_allclose(
                arrays_b[group][key], value, rtol=0, atol=atol, err_msg=f"{group}: {key}"
            )


def test_every_rank_writes_its_own_part(runs):
    root, _, results = runs
    assert results["straight"] == [str(root / "straight")] * 4
    step = root / "straight" / "checkpoints" / STEP.format(6)
    assert sorted(p.name for p in step.iterdir() if p.is_dir()) == [f"rank_{r:05d}" for r in range(4)]
    assert not list((root / "straight" / "checkpoints").glob(".*"))  # no partial folder left


def test_sigterm_then_resume_on_four_ranks_equals_the_uninterrupted_run(runs):
    root, _, results = runs
    assert results["stopped_then_resumed"] == ["stopped at 3"] * 4
    _assert_checkpoints_equal(
        root / "straight" / "checkpoints" / STEP.format(6),
        root / "resumed" / "checkpoints" / STEP.format(6),
        1e-6,
    )


def test_resharded_resume_at_dp4_and_in_one_process_equals_the_uninterrupted_run(runs, tmp_path):
    from mg_train.transformer_train import run

    root, data, results = runs
    assert results["dp4"] == [str(root / "dp4")] * 4
    expected = root / "straight" / "checkpoints" / STEP.format(6)
    _assert_checkpoints_equal(expected, root / "dp4" / "checkpoints" / STEP.format(6), 1e-5)
    shutil.copytree(
        root / "straight" / "checkpoints" / STEP.format(4), tmp_path / "one" / "checkpoints" / STEP.format(4)
    )
    run(config(data, tmp_path / "one", 1, {}))
    _assert_checkpoints_equal(expected, tmp_path / "one" / "checkpoints" / STEP.format(6), 1e-5)


def test_a_rank_killed_mid_save_leaves_the_previous_checkpoint_as_latest(runs):
    from mg_train.transformer_train import run

    root, data, _ = runs
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in vars(data).items()}
    with pytest.raises(DistributedRunError):
        run_distributed(f"{__file__}:killed_mid_save_suite", 2, args=(plain, str(root)), timeout=600)
    checkpoints = root / "killed" / "checkpoints"
    assert CheckpointManager(checkpoints).latest().name == STEP.format(2)
    assert (checkpoints / f".{STEP.format(4)}.partial").is_dir()  # the unfinished save, not a checkpoint
    run(config(data, root / "killed", 1, {}))  # resume="auto" from step 2, here in one process
    _assert_checkpoints_equal(
        root / "straight" / "checkpoints" / STEP.format(6), checkpoints / STEP.format(6), 1e-5
    )
