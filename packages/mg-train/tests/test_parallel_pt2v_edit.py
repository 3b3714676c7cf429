"""PT2V and Movie Gen Edit under the same parallel plan as T2V: on 4 msrun ranks (CPU, mccl), dp2 x tp2 with
ZeRO-3 and cp2 x sp2, each starting from a T2V model, equal one process on the same global batch of 4 after 3
steps with validation and EMA: every parameter, AdamW moment and EMA tensor of the final checkpoint and the
exported folder within 1e-5, losses and gradient norms within 1e-5 relative. PT2V trains the tiny vision tower
(stage 3's setting: its parameters sharded by ZeRO-3 like the transformer's); Edit trains the task embeddings
and the widened patch embedding, its condition latents split with the batch and the sequence."""

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
LAYOUTS = {
    "dp2_tp2_zero3": {"tp": 2, "zero_stage": 3},
    "cp2_sp2": {"cp": 2, "sp": 2},
}
KINDS = ("pt2v", "edit")
CASES = {f"{kind}_{layout}": (kind, layout) for kind in KINDS for layout in LAYOUTS}
EXPORTS = {
    "pt2v": ("transformer/model.safetensors", "vision/model.safetensors", "reference_projection.safetensors"),
    "edit": ("transformer/model.safetensors", "task_embedding.safetensors"),
}
OWN = {"pt2v": ".vision.", "edit": "time.weight"}  # the wrapper's own trained parameters, by name


def case_config(inputs: SimpleNamespace, kind: str, out: Path, parallel: dict, world: int = 1):
    model_parallel = parallel.get("tp", 1) * parallel.get("cp", 1) * parallel.get("sp", 1)
    wrapper = (
        {"reference": {"vision": "tiny", "train_vision": True, "columns": ["reference", "cross_reference"]}}
        if kind == "pt2v"
        else {"editing": {"tasks": ["recolor", "mark", "remove", "background"], "seed": 1}}
    )
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
        optim={"lr": 3e-3, "warmup_steps": 1, "ema_decay": 0.5},
        train={"steps": 3, "val_every": 3, "val_batches": 1},
        parallel=dict(parallel),
        **wrapper,
    )


def suite(inputs: dict, out_root: str) -> dict:
    """Runs on every rank: each case is a full PT2V or Edit training run in its own output folder."""
    import os

    from mg_parallel.testing import run_cases
    from mg_train.runtime import setup_mindspore
    from mg_train.transformer_train import run

    setup_mindspore()
    world = int(os.environ.get("MS_WORKER_NUM", "1"))

    def make(name: str):
        kind, layout = CASES[name]
        data = SimpleNamespace(**inputs[kind])
        return lambda: str(run(case_config(data, kind, Path(out_root) / name, LAYOUTS[layout], world)))

    return run_cases({name: make(name) for name in CASES})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from mg_train.transformer_train import run

    root = tmp_path_factory.mktemp("wrappers_parallel")
    plain = {}
    for kind in KINDS:
        data = testing.make_training_data(
            root / kind / "data", n=12, personalization=kind == "pt2v", editing=kind == "edit"
        )
        data.t2v = str(root / kind / "t2v")
        t2v = {"preset": "tiny", "overrides": dict(MODEL)}
        run(testing.transformer_train_config(data, root / kind / "t2v", model=t2v))
        run(case_config(data, kind, root / kind / "single", {}))
        plain[kind] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(data).items()}
    results = CaseResults(
        run_distributed(f"{__file__}:suite", 4, args=(plain, str(root / "runs4")), timeout=900)
    )
    return root, results


def _final_state(run_dir: Path, kind: str) -> dict[str, dict[str, np.ndarray]]:
    groups, state = load_checkpoint(CheckpointManager(run_dir / "checkpoints").latest())
    assert state["step"] == 3
    export = {f"{f}:{k}": v for f in EXPORTS[kind] for k, v in load_file(str(run_dir / kind / f)).items()}
    return {**groups, "export": export}


@pytest.mark.parametrize("name", list(CASES))
def test_on_four_ranks_equals_one_process(runs, name):
    root, results = runs
    kind = CASES[name][0]
    out = root / "runs4" / name
    assert results[name] == [str(out)] * 4
    single, parallel = _final_state(root / kind / "single", kind), _final_state(out, kind)
    assert sorted(single) == sorted(parallel) == ["ema", "export", "model", "optimizer"]
    assert any(OWN[kind] in k for k in single["optimizer"]), f"{kind}'s own parameters have optimizer state"
    for group in single:
        assert single[group].keys() == parallel[group].keys(), (name, group)
        for key in single[group]:
            np.testing.assert_allclose(
                parallel[group][key], single[group][key], rtol=0, atol=1e-5, err_msg=f"{name}: {group} {key}"
            )
    expected, got = testing.run_metrics(root / kind / "single"), testing.run_metrics(out)
    assert [m["step"] for m in got] == [m["step"] for m in expected] == [0, 1, 2, 3, 3]
    for a, b in zip(expected, got, strict=True):
        for field in ("loss", "val_loss", "grad_norm"):
            if field in a:
                assert b[field] == pytest.approx(a[field], rel=1e-5), (name, a["step"], field)
