"""`mg-train train` under msrun with 2 processes equals one process: data parallel (ZeRO stages 0 and 3) with
2 samples per rank reaches the weights of one process with 4, and Ulysses sequence parallel (sp = 2, with ZeRO-2
over the two ranks) with 4 samples reaches them too (within 1e-5, EMA weights exported). Losses and validation losses match as well.
All cases share one launch (a launch costs ~16 s on CPU); the single-process reference runs in pytest itself.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mg_parallel.testing import CaseResults, run_distributed
from mg_train import testing

pytestmark = pytest.mark.multiprocess


H = SimpleNamespace(
    make_data=testing.make_training_data,
    train_config=testing.transformer_train_config,
    metrics=testing.run_metrics,
    weights=testing.final_weights,
)

# name -> (samples per rank, config changes); the global batch is 4 in every case.
CASES = {
    "dp": (2, {"parallel": {"zero_stage": 0}}),
    "zero3": (2, {"parallel": {"zero_stage": 3}}),
    "sp2_zero2": (4, {"parallel": {"sp": 2, "zero_stage": 2}}),
}


def case_config(inputs: SimpleNamespace, out: Path, batch: int, changes: dict):
    data = {
        "manifest": inputs.train,
        "val_manifest": inputs.val,
        "frames": 16,
        "size": [32, 32],
        "batch_size": batch,
    }
    return H.train_config(
        inputs,
        out,
        data=data,
        optim={"lr": 3e-3, "warmup_steps": 1, "ema_decay": 0.5},
        train={"steps": 3, "val_every": 3, "val_batches": 1},
        **changes,
    )


def suite(inputs: dict, out_root: str) -> dict:
    """Runs on every rank: each case is a full training run in its own output folder."""
    from mg_parallel.testing import run_cases
    from mg_train.runtime import setup_mindspore
    from mg_train.transformer_train import run

    setup_mindspore()
    data = SimpleNamespace(**inputs)

    def make(name: str, batch: int, changes: dict):
        def case() -> str:
            return str(run(case_config(data, Path(out_root) / name, batch, changes)))

        return case

    return run_cases({name: make(name, *spec) for name, spec in CASES.items()})


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    from mg_train.transformer_train import run

    root = tmp_path_factory.mktemp("tf_parallel")
    data = H.make_data(root / "data", n=12)
    run(case_config(data, root / "single", 4, {}))
    inputs = {k: str(v) if isinstance(v, Path) else v for k, v in vars(data).items()}
    results = run_distributed(f"{__file__}:suite", 2, args=(inputs, str(root / "runs")), timeout=400)
    return root, CaseResults(results)


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_equal_one(launched, name):
    root, results = launched
    assert results[name] == [str(root / "runs" / name)] * 2
    single, parallel = H.weights(root / "single"), H.weights(root / "runs" / name)
    assert single.keys() == parallel.keys()
    for key in single:
        np.testing.assert_allclose(parallel[key], single[key], rtol=0, atol=1e-5, err_msg=f"{name}: {key}")
    expected, got = H.metrics(root / "single"), H.metrics(root / "runs" / name)
    assert [m["step"] for m in got] == [m["step"] for m in expected] == [0, 1, 2, 3, 3]
    for a, b in zip(expected, got, strict=True):
        for field in ("loss", "val_loss", "grad_norm"):
            if field in a:
                assert b[field] == pytest.approx(a[field], rel=1e-5), (name, a["step"], field)
