"""The planner's bytes are the bytes of real runs: for layouts at 2 and 4 ranks (msrun, CPU, mccl) one optimizer
step of `mg-train train` is counted by mg-parallel's instrumented collectives (`mg_parallel.comm.traffic`) and
the optimizer's `memory_report` is read on every rank; `mg_train.planning` must predict both exactly (bytes and
calls per collective; parameter, gradient, optimizer-state and chunk-copy bytes). The cases cover every style
(sequence split/gather, tensor parallel with and without its sequence-parallel variant, Ulysses, context
parallel), every ZeRO stage, recomputation, the position embedding in every block and gradient accumulation.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mg_data.caches import TextEmbeddingStore
from mg_parallel import planner
from mg_parallel.testing import CaseResults, run_distributed
from mg_train import planning, testing
from mg_transformer import TransformerConfig

pytestmark = pytest.mark.multiprocess

MODEL = {**testing.TINY_MODEL, "num_heads": 4}
CKPT = {"train": {"gradient_checkpointing": True}}

# name -> (world, config changes); the global batch is 4 in every case.
CASES = {
    "dp4": (4, {}),
    "dp2_tp2_zero3": (4, {"parallel": {"tp": 2, "zero_stage": 3}}),
    "cp2_sp2_ckpt_pos_every": (4, {"parallel": {"cp": 2, "sp": 2}, **CKPT, "pos_every": True}),
    "tp2_cp2_zero1_no_tp_sp": (
        4,
        {"parallel": {"tp": 2, "cp": 2, "zero_stage": 1, "tp_sequence_parallel": False}},
    ),
    "dp2_sp2_zero2_accum2": (4, {"parallel": {"sp": 2, "zero_stage": 2}, "optim": {"grad_accum": 2}}),
    "tp2_sp2_zero3_ckpt": (4, {"parallel": {"tp": 2, "sp": 2, "zero_stage": 3}, **CKPT}),
    "dp2_zero2": (2, {"parallel": {"zero_stage": 2}}),
    "tp2_zero3_ckpt": (2, {"parallel": {"tp": 2, "zero_stage": 3}, **CKPT}),
    "sp2_zero1_pos_every": (2, {"parallel": {"sp": 2, "zero_stage": 1}, "pos_every": True}),
}


def case_config(inputs: SimpleNamespace, out: Path, changes: dict, world: int):
    parallel = dict(changes.get("parallel", {}))
    model_parallel = parallel.get("tp", 1) * parallel.get("cp", 1) * parallel.get("sp", 1)
    overrides = {**MODEL, "pos_embed_every_layer": bool(changes.get("pos_every"))}
    return testing.transformer_train_config(
        inputs,
        out,
        model={"preset": "tiny", "overrides": overrides},
        data={
            "manifest": inputs.train,
            "frames": 16,
            "size": [32, 32],
            "batch_size": 4 // (world // model_parallel),
        },
        optim={"lr": 3e-3, "warmup_steps": 1, "ema_decay": 0.5, **changes.get("optim", {})},
        train={"steps": 2, **changes.get("train", {})},
        parallel=parallel,
    )


def suite(inputs: dict, out_root: str, names: list[str]) -> dict:
    """Runs on every rank: each case is a training run whose second step is counted."""
    from mg_parallel.testing import run_cases
    from mg_train.runtime import setup_mindspore

    setup_mindspore()
    data = SimpleNamespace(**inputs)

    def make(name: str):
        world, changes = CASES[name]
        return lambda: testing.measure_step(case_config(data, Path(out_root) / name, changes, world), step=2)

    return run_cases({name: make(name) for name in names})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("planning")
    return root, testing.make_training_data(root / "data", n=12)


def _launch(inputs, world: int) -> CaseResults:
    root, data = inputs
    names = [name for name, (size, _) in CASES.items() if size == world]
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in vars(data).items()}
    results = run_distributed(
        f"{__file__}:suite", world, args=(plain, str(root / f"runs{world}"), names), timeout=900
    )
    return CaseResults(results)


@pytest.fixture(scope="module")
def measured(inputs):
    return {2: _launch(inputs, 2), 4: _launch(inputs, 4)}


def predicted(inputs, name: str) -> tuple[planner.Traffic, planner.StateBytes]:
    """What the planner says for case `name`, from the config alone (text tokens from the cache's lengths)."""
    _, data = inputs
    world, changes = CASES[name]
    parallel = changes.get("parallel", {})
    tp, cp, sp = (parallel.get(a, 1) for a in ("tp", "cp", "sp"))
    layout = planner.Layout(
        dp=world // (tp * cp * sp),
        cp=cp,
        sp=sp,
        tp=tp,
        zero_stage=parallel.get("zero_stage", 0),
        recompute=changes.get("train", {}).get("gradient_checkpointing", False),
    )
    store = TextEmbeddingStore(data.text)
    config = TransformerConfig.preset(
        "tiny",
        **MODEL,
        text_dims={n: int(s.dim) for n, s in store.specs.items()},
        pos_embed_every_layer=bool(changes.get("pos_every")),
    )
    work = planning.Workload(
        batch=4 // layout.dp,
        tokens=2 * 2 * 2,  # 16 frames at 32 px: 2 x 4 x 4 latents, (1, 2, 2) patches
        text_tokens=sum(int(s.max_length) for s in store.specs.values()),
        micro_batches=changes.get("optim", {}).get("grad_accum", 1),
    )
    params = planning.parameter_specs(config)
    traffic = planning.step_traffic(config, layout, work, params, parallel.get("tp_sequence_parallel", True))
    return traffic, planner.state_bytes(params, layout)


@pytest.mark.parametrize("name", list(CASES))
def test_planner_matches_instrumented_run(measured, inputs, name):
    world = CASES[name][0]
    traffic, state = predicted(inputs, name)
    for rank, got in enumerate(measured[world][name]):
        assert got["bytes"] == traffic.bytes, f"{name} rank {rank}: bytes per collective"
        assert got["calls"] == traffic.calls, f"{name} rank {rank}: calls per collective"
        expected = {k: v for k, v in state.as_dict().items() if k != "ema"}
        assert got["state"] == expected, f"{name} rank {rank}: state bytes"
