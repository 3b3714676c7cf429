"""`mg-train train` under msrun equals one process on the same global batch (4 samples), after 3 optimizer steps
with validation and EMA: every exported parameter within 1e-5 and the losses, gradient norms and validation
losses within 1e-5 relative, for the layouts of the Movie Gen plan (real processes, CPU, mccl):

- 4 ranks, one launch: dp2 x tp2 with ZeRO-3 and with ZeRO-2; tp2 x cp2 (gradient checkpointing on); dp2 x sp2
  with ZeRO-2; cp2 x sp2 (gradient checkpointing on); dp4 with ZeRO-1; cp2 x sp2 with the position embedding
  added in every block (against a one-process run of that model);
- 8 ranks: the shipped 30B stage-2 layout (tp2 x cp2 x sp4, ZeRO-3) scaled to 8 ranks as tp2 x cp2 x sp2
  with ZeRO-3 and gradient checkpointing;
- 2 simulated hosts of 2 ranks each (network namespaces; one msrun per host, `--node_rank`): dp2 x tp2 with
  ZeRO-3, equal to the same layout on one node.

The single-process references run in pytest itself. Each case prints its seconds per step next to the single
process's (`pytest -s` shows them).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mg_parallel.testing import CaseResults, SimulatedHosts, run_distributed
from mg_train import testing

pytestmark = pytest.mark.multiprocess

# Four heads and widths that divide by tp x sp = 4; 16 frames at 32 px = 8 tokens, which divide by cp x sp x tp.
MODEL = {**testing.TINY_MODEL, "num_heads": 4}
REFERENCES = {"base": {}, "pos_every": {"pos_embed_every_layer": True}}

# name -> (world size, reference model, config changes); the global batch is 4 in every case.
CASES = {
    "dp2_tp2_zero3": (4, "base", {"parallel": {"tp": 2, "zero_stage": 3}}),
    "tp2_cp2_ckpt": (4, "base", {"parallel": {"tp": 2, "cp": 2}, "train": {"gradient_checkpointing": True}}),
    "dp2_sp2_zero2": (4, "base", {"parallel": {"sp": 2, "zero_stage": 2}}),
    "dp2_tp2_zero2": (4, "base", {"parallel": {"tp": 2, "zero_stage": 2}}),
    "cp2_sp2_ckpt": (4, "base", {"parallel": {"cp": 2, "sp": 2}, "train": {"gradient_checkpointing": True}}),
    "dp4_zero1": (4, "base", {"parallel": {"zero_stage": 1}}),
    "cp2_sp2_pos_every": (4, "pos_every", {"parallel": {"cp": 2, "sp": 2}}),
    "30B_stage2_on_8": (
        8,
        "base",
        {"parallel": {"tp": 2, "cp": 2, "sp": 2, "zero_stage": 3}, "train": {"gradient_checkpointing": True}},
    ),
}


def case_config(inputs: SimpleNamespace, out: Path, reference: str, changes: dict, world: int = 1):
    parallel = dict(changes.get("parallel", {}))
    model_parallel = parallel.get("tp", 1) * parallel.get("cp", 1) * parallel.get("sp", 1)
    data = {
        "manifest": inputs.train,
        "val_manifest": inputs.val,
        "frames": 16,
        "size": [32, 32],
        "batch_size": 4 // (world // model_parallel),  # per data-parallel rank: the global batch stays 4
    }
    sections = {k: v for k, v in changes.items() if k not in ("parallel", "train")}
    return testing.transformer_train_config(
        inputs,
        out,
        model={"preset": "tiny", "overrides": {**MODEL, **REFERENCES[reference]}},
        data=data,
        optim={"lr": 3e-3, "warmup_steps": 1, "ema_decay": 0.5},
        train={"steps": 3, "val_every": 3, "val_batches": 1, **changes.get("train", {})},
        parallel=parallel,
        **sections,
    )


def suite(inputs: dict, out_root: str, names: list[str]) -> dict:
    """Runs on every rank: each case is a full training run in its own output folder."""
    from mg_parallel.testing import run_cases
    from mg_train.runtime import setup_mindspore
    from mg_train.transformer_train import run

    setup_mindspore()
    data = SimpleNamespace(**inputs)
    world = int(__import__("os").environ.get("MS_WORKER_NUM", "1"))

    def make(name: str):
        _, reference, changes = CASES[name]

        def case() -> str:
            return str(run(case_config(data, Path(out_root) / name, reference, changes, world)))

        return case

    return run_cases({name: make(name) for name in names})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf_parallel")
    data = testing.make_training_data(root / "data", n=12)
    from mg_train.transformer_train import run

    for reference in REFERENCES:
        run(case_config(data, root / "single" / reference, reference, {}))
    return root, data


def _launch(inputs, world: int, tag: str, hosts=None) -> tuple[Path, CaseResults]:
    root, data = inputs
    names = (
        [name for name, (size, _, _) in CASES.items() if size == world]
        if hosts is None
        else ["dp2_tp2_zero3"]
    )
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in vars(data).items()}
    out = root / tag
    results = run_distributed(
        f"{__file__}:suite", world, args=(plain, str(out), names), timeout=900, hosts=hosts
    )
    return out, CaseResults(results)


@pytest.fixture(scope="module")
def four_ranks(inputs):
    return _launch(inputs, 4, "runs4")


@pytest.fixture(scope="module")
def eight_ranks(inputs):
    return _launch(inputs, 8, "runs8")


def _assert_equal_runs(root: Path, run_dir: Path, reference: str, name: str) -> None:
    single = testing.final_weights(root / "single" / reference)
    parallel = testing.final_weights(run_dir)
    assert single.keys() == parallel.keys()
    for key in single:
        np.testing.assert_allclose(parallel[key], single[key], rtol=0, atol=1e-5, err_msg=f"{name}: {key}")
    expected, got = testing.run_metrics(root / "single" / reference), testing.run_metrics(run_dir)
    assert [m["step"] for m in got] == [m["step"] for m in expected] == [0, 1, 2, 3, 3]
    for a, b in zip(expected, got, strict=True):
        for field in ("loss", "val_loss", "grad_norm"):
            if field in a:
                assert b[field] == pytest.approx(a[field], rel=1e-5), (name, a["step"], field)
    step = lambda rows: np.diff([m["time"] for m in rows if "loss" in m]).mean()  # noqa: E731
    print(f"{name}: {step(got):.2f} s/step vs one process {step(expected):.2f} s/step")


@pytest.mark.parametrize("name", [n for n, (size, _, _) in CASES.items() if size == 4])
def test_four_ranks_equal_one_process(inputs, four_ranks, name):
    root, _ = inputs
    out, results = four_ranks
    assert results[name] == [str(out / name)] * 4
    _assert_equal_runs(root, out / name, CASES[name][1], name)


def test_the_30b_stage2_layout_on_8_ranks_equals_one_process(inputs, eight_ranks):
    root, _ = inputs
    out, results = eight_ranks
    name = "30B_stage2_on_8"
    assert results[name] == [str(out / name)] * 8
    _assert_equal_runs(root, out / name, "base", name)


@pytest.mark.skipif(
    not SimulatedHosts.available(), reason="multi-node test needs root and iproute2 (ip netns)"
)
def test_two_hosts_equal_one(inputs):
    """Two msrun invocations (one per simulated host, 2 workers each, one master address and port) train
    dp2 x tp2 ZeRO-3 to the one-process result, as 4 ranks on one node do."""
    root, _ = inputs
    with SimulatedHosts(2) as hosts:
        out, results = _launch(inputs, 4, "runs_2hosts", hosts=hosts)
    assert results["dp2_tp2_zero3"] == [str(out / "dp2_tp2_zero3")] * 4
    _assert_equal_runs(root, out / "dp2_tp2_zero3", "base", "dp2_tp2_zero3 on 2 hosts")
