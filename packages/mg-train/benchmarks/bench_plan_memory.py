"""The planner's activation memory next to the measured one, on shapes and layouts it was not fitted on.

    python packages/mg-train/benchmarks/bench_plan_memory.py [--cases single,single_ckpt,tp2,sp2,cp2]
        [--batches 2 6]

`mg_train.planning.activation_bytes` counts per-token constants measured on one shape (H=256, F=704, 4 heads,
4 and 8 layers). This benchmark checks them elsewhere: a 3-layer H=384, F=1024, 6-head transformer on 256
latent tokens and 192 text tokens per sample, in one process (with and without gradient checkpointing) and at
2 ranks under msrun (tp2 with its sequence-parallel variant, Ulysses sp2, context parallel cp2; the plan a
training run applies). Each (case, batch) runs in fresh processes: MindSpore's memory pool keeps what it once
took, so the figure is the rise of the peak resident memory (VmHWM) during the first forward + backward above
what the process held before it. The difference between two batch sizes isolates what scales with the batch
(activations and their gradients) from the model state; the planner predicts the same difference. Target: the
prediction within 15% of the measurement on every rank.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

MODEL = {
    "num_layers": 3,
    "hidden_size": 384,
    "ffn_size": 1024,
    "num_heads": 6,
    "pos_embed_max_size": [4, 8, 8],
}
TEXT_DIMS = {"ul2": 64, "byt5": 48, "metaclip": 32}
TEXT_LEN = 64  # per encoder
LATENT = (16, 4, 16, 16)  # channels, frames, height, width: 4 x 8 x 8 = 256 tokens with (1, 2, 2) patches
CASES = {  # name -> (ranks, parallel degrees, gradient checkpointing)
    "single": (1, {}, False),
    "single_ckpt": (1, {}, True),
    "tp2": (2, {"tp": 2}, False),
    "sp2": (2, {"sp": 2}, False),
    "cp2": (2, {"cp": 2}, False),
}


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def first_step_rise(batch: int, degrees: dict, checkpointing: bool, layers: int | None = None) -> int:
    """Bytes the peak resident memory rises by during the first forward + backward (runs on every rank)."""
    import mindspore as ms
    import numpy as np

    import mg_parallel as mp
    from mg_train.parallel_plan import parallelize_transformer
    from mg_train.runtime import setup_mindspore
    from mg_transformer import MovieGenTransformer, TransformerConfig, rectified_flow_loss

    setup_mindspore()
    ctx = mp.init_parallel(**degrees)
    config = TransformerConfig.preset(
        "tiny", text_dims=TEXT_DIMS, **{**MODEL, "num_layers": layers or MODEL["num_layers"]}
    )
    model = MovieGenTransformer(config)
    model.set_gradient_checkpointing(checkpointing)
    parallelize_transformer(model, ctx)
    params = model.trainable_params()
    grad_fn = ms.value_and_grad(lambda *a: rectified_flow_loss(model, *a), None, params)
    rng = np.random.default_rng(0)  # the same inputs on every rank: one data-parallel replica
    x = ms.Tensor(rng.standard_normal((batch, *LATENT)).astype(np.float32))
    embs = tuple(
        ms.Tensor(rng.standard_normal((batch, TEXT_LEN, d)).astype(np.float32)) for d in TEXT_DIMS.values()
    )
    masks = tuple(ms.Tensor(np.ones((batch, TEXT_LEN), np.float32)) for _ in TEXT_DIMS)
    t = ms.Tensor(rng.uniform(0, 1, batch).astype(np.float32))
    noise = ms.Tensor(rng.standard_normal((batch, *LATENT)).astype(np.float32))
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    loss, _grads = grad_fn(x, embs, masks, t, noise)
    loss.asnumpy()
    return _status("VmHWM") - before


def predicted(batch: int, degrees: dict, checkpointing: bool) -> int:
    from mg_parallel.planner import Layout
    from mg_train.planning import Workload, activation_bytes
    from mg_transformer import TransformerConfig

    config = TransformerConfig.preset("tiny", text_dims=TEXT_DIMS, **MODEL)
    tokens = LATENT[1] * (LATENT[2] // 2) * (LATENT[3] // 2)
    layout = Layout(**degrees, recompute=checkpointing)
    work = Workload(batch, tokens, TEXT_LEN * len(TEXT_DIMS))
    return activation_bytes(
        config, layout, work, emulated_collectives=True
    ).total  # CPU: emulated collectives


def measure(name: str, batch: int) -> list[int]:
    ranks, degrees, checkpointing = CASES[name]
    if ranks == 1:
        code = (
            f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_plan_memory as b; "
            f"print(b.first_step_rise({batch}, {degrees!r}, {checkpointing}, {MODEL['num_layers']}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "GLOG_v": "3"}
        )
        if done.returncode:
            raise RuntimeError(done.stderr[-3000:])
        return [int(done.stdout.strip().splitlines()[-1])]
    from mg_parallel.testing import run_distributed

    return run_distributed(
        f"{__file__}:first_step_rise",
        ranks,
        args=(batch, degrees, checkpointing, MODEL["num_layers"]),
        timeout=1200,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--batches", type=int, nargs=2, default=[2, 6])
    parser.add_argument("--layers", type=int, default=MODEL["num_layers"])
    args = parser.parse_args()
    MODEL["num_layers"] = args.layers
    small, large = args.batches
    print(
        f"{MODEL['num_layers']} layers, hidden {MODEL['hidden_size']}, ffn {MODEL['ffn_size']}, "
        f"{MODEL['num_heads']} heads; batch {small} -> {large}; rise of the first step's peak, MB"
    )
    print(f"{'case':<13}{'rank':>5}{'measured':>10}{'planned':>10}{'planned/measured':>18}")
    rows, worst = [], 0.0
    for name in args.cases.split(","):
        ranks, degrees, checkpointing = CASES[name]
        low, high = measure(name, small), measure(name, large)
        plan = predicted(large, degrees, checkpointing) - predicted(small, degrees, checkpointing)
        for rank in range(ranks):
            got = high[rank] - low[rank]
            ratio = plan / got
            worst = max(worst, abs(ratio - 1))
            print(f"{name:<13}{rank:>5}{got / 2**20:>10.1f}{plan / 2**20:>10.1f}{ratio:>18.2f}", flush=True)
            rows.append(
                {
                    "figure": f"activation memory of {name} rank {rank} (batch {small} -> {large})",
                    "ours": plan / 2**20,
                    "reference": got / 2**20,
                    "reference_name": "measured peak rise",
                    "unit": "MB",
                    "better": "lower",
                }
            )
    print(f"largest deviation: {worst:.0%} (target <= 15%)")
    mg_bench("mg-train/bench_plan_memory", *(tuple(row.values()) for row in rows))


if __name__ == "__main__":
    main()
