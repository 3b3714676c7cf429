"""PT2V under the same parallel plan as T2V: on 4 msrun ranks (CPU, mccl), dp2 x tp2 with ZeRO-3 and cp2 x sp2,
each starting from a T2V model with the tiny vision tower trained (stage 3's setting: its parameters sharded
by ZeRO-3 like the transformer's), equal one process on the same global batch of 4 after 3 steps with
validation and EMA: every parameter, AdamW moment and EMA tensor of the final checkpoint and the exported PT2V
folder within 1e-5, losses and gradient norms within 1e-5 relative."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import load_file

from mg_parallel.testing import CaseResults, run_distributed
from mg_train import testing
from mg_train.checkpoint import CheckpointManager, load_checkpoint

pytestmark = pytest.mark.multiprocess

MODEL = {**testing.TINY_MODEL, "num_heads": 4}
CASES = {
    "dp2_tp2_zero3": {"tp": 2, "zero_stage": 3},
    "cp2_sp2": {"cp": 2, "sp": 2},
}
PT2V_FILES = ("transformer/model.safetensors", "vision/model.safetensors", "reference_projection.safetensors")


def case_config(inputs: SimpleNamespace, out: Path, parallel: dict, world: int = 1):
    model_parallel = parallel.get("tp", 1) * parallel.get("cp", 1) * parallel.get("sp", 1)
    return testing.transformer_train_config(
        inputs,
        out,
        model={"preset": "tiny", "overrides": dict(MODEL), "init_from": inputs.t2v},
        data={
            "manifest": inputs.train,
            "val_manifest": inputs.val,
            "frames": 16,
            "size": [32, 32],
            "batch_size": 4 // (world // model_parallel),
        },
        reference={"vision": "tiny", "train_vision": True, "columns": ["reference", "cross_reference"]},
        optim={"lr": 3e-3, "warmup_steps": 1, "ema_decay": 0.5},
        train={"steps": 3, "val_every": 3, "val_batches": 1},
        parallel=dict(parallel),
    )


def suite(inputs: dict, out_root: str) -> dict:
    """Runs on every rank: each case is a full PT2V training run in its own output folder."""
    import os

    from mg_parallel.testing import run_cases
    from mg_train.runtime import setup_mindspore
    from mg_train.transformer_train import run

    setup_mindspore()
    data = SimpleNamespace(**inputs)
    world = int(os.environ.get("MS_WORKER_NUM", "1"))

    def make(name: str):
        return lambda: str(run(case_config(data, Path(out_root) / name, CASES[name], world)))

    return run_cases({name: make(name) for name in CASES})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from mg_train.transformer_train import run

    root = tmp_path_factory.mktemp("pt2v_parallel")
    data = testing.make_training_data(root / "data", n=12, personalization=True)
    data.t2v = str(root / "t2v")
    run(
        testing.transformer_train_config(
            data, root / "t2v", model={"preset": "tiny", "overrides": dict(MODEL)}
        )
    )
    run(case_config(data, root / "single", {}))
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in vars(data).items()}
    results = CaseResults(
        run_distributed(f"{__file__}:suite", 4, args=(plain, str(root / "runs4")), timeout=900)
    )
    return root, results


def _final_state(run_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    groups, state = load_checkpoint(CheckpointManager(run_dir / "checkpoints").latest())
    assert state["step"] == 3
    export = {f"{f}:{k}": v for f in PT2V_FILES for k, v in load_file(str(run_dir / "pt2v" / f)).items()}
    return {**groups, "export": export}


@pytest.mark.parametrize("name", list(CASES))
def test_pt2v_on_four_ranks_equals_one_process(runs, name):
    root, results = runs
    out = root / "runs4" / name
    assert results[name] == [str(out)] * 4
    single, parallel = _final_state(root / "single"), _final_state(out)
    assert sorted(single) == sorted(parallel) == ["ema", "export", "model", "optimizer"]
    assert any(".vision." in k for k in single["optimizer"]), "the trained vision tower has optimizer state"
    for group in single:
        assert single[group].keys() == parallel[group].keys(), (name, group)
        for key in single[group]:
            np.testing.assert_allclose(
                parallel[group][key], single[group][key], rtol=0, atol=1e-5, err_msg=f"{name}: {group} {key}"
            )
    expected, got = testing.run_metrics(root / "single"), testing.run_metrics(out)
    assert [m["step"] for m in got] == [m["step"] for m in expected] == [0, 1, 2, 3, 3]
    for a, b in zip(expected, got, strict=True):
        for field in ("loss", "val_loss", "grad_norm"):
            if field in a:
                assert b[field] == pytest.approx(a[field], rel=1e-5), (name, a["step"], field)
