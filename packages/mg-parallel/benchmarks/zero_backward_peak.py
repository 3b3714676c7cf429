"""Per-rank peak host memory of one forward + backward pass under ZeRO, on 1, 2 and 4 ranks (CPU, msrun).

    python packages/mg-parallel/benchmarks/zero_backward_peak.py [--dim 1024] [--hidden 4096] [--depth 8]
        [--ranks 1 2 4] [--stages 0 2 3] [--jit]

`zero_memory.py` counts the bytes each rank keeps between steps; this one measures what a rank holds at the
worst moment of the backward pass, where the gradients are produced. Every (ranks, stage) pair runs in fresh
processes (MindSpore's host memory pool keeps what it once took, so peaks of two runs in one process mix).
Each rank builds an MLP stack (blocks of Linear(dim, hidden) -> SiLU -> Linear(hidden, dim), residual) on a
batch small enough that activations are negligible, wraps it in `ZeroOptimizer` (nn.AdamWeightDecay), then
measures its resident memory (VmRSS) before the first `value_and_grad(loss, None, zero.params)` and the peak
(VmHWM, reset through /proc/self/clear_refs just before) during it, then the peak during `zero(grads)`.
With gradients sharded as they are produced (stages 2 and 3), the backward peak above the built state falls
as ~1/N: every rank then holds its chunk of each gradient plus one parameter's full gradient in flight.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def measure(stage: int, dim: int, hidden: int, depth: int, jit: bool, recompute: bool = False) -> dict:
    """Runs on every rank: memory before, during and after one forward + backward and one ZeRO step."""
    import mindspore as ms
    import numpy as np
    from mindspore import mint, nn

    import mg_parallel as mp

    class Block(nn.Cell):
        def __init__(self):
            super().__init__()
            self.up = mint.nn.Linear(dim, hidden)
            self.down = mint.nn.Linear(hidden, dim)

        def construct(self, x):
            return x + self.down(ms.ops.silu(self.up(x)))

    class Stack(nn.Cell):
        def __init__(self):
            super().__init__()
            self.blocks = nn.CellList([Block() for _ in range(depth)])

        def construct(self, x):
            for block in self.blocks:
                x = ms.recompute(block, x) if recompute else block(x)
            return x

    ctx = mp.init_parallel()
    ms.set_seed(0)
    model = Stack()
    zero = mp.ZeroOptimizer(
        model, lambda ps: nn.AdamWeightDecay(ps, learning_rate=1e-4), stage=stage, ctx=ctx, clip_norm=1.0
    )
    x = ms.Tensor(np.ones((1, 4, dim), np.float32))
    grad_fn = ms.value_and_grad(lambda a: model(a).mean(), None, zero.params)
    if jit:
        grad_fn = ms.jit(grad_fn)
    mp.all_reduce(ms.Tensor(np.zeros(1, np.float32)), ctx.world_group).asnumpy()  # all ranks built
    built = _status_mb("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    loss, grads = grad_fn(x)
    loss.asnumpy()
    backward_s = time.perf_counter() - start
    backward_peak = _status_mb("VmHWM")
    after_backward = _status_mb("VmRSS")
    grad_bytes = sum(g.nbytes for g in grads)
    _reset_peak()
    zero(grads).asnumpy()
    step_peak = _status_mb("VmHWM")
    return {
        "built_mb": built,
        "backward_peak_mb": backward_peak,
        "after_backward_mb": after_backward,
        "step_peak_mb": step_peak,
        "grad_bytes": grad_bytes,
        "param_bytes": sum(p.nbytes for p in model.trainable_params()),
        "backward_s": backward_s,
        "report": zero.memory_report(grads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dim", type=int, default=1024, help="model width (default 1024)")
    parser.add_argument("--hidden", type=int, default=4096, help="MLP hidden width (default 4096)")
    parser.add_argument(
        "--depth", type=int, default=8, help="number of MLP blocks (default 8: 67M parameters)"
    )
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4], help="world sizes to measure")
    parser.add_argument("--stages", type=int, nargs="+", default=[0, 2, 3], help="ZeRO stages to measure")
    parser.add_argument("--jit", action="store_true", help="compile forward + backward with mindspore.jit")
    parser.add_argument(
        "--recompute", action="store_true", help="recompute each block in the backward pass (ms.recompute)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per msrun launch (default 900)")
    args = parser.parse_args()

    from mg_parallel.testing import run_distributed

    results: dict[tuple[int, int], list[dict]] = {}
    for stage in args.stages:
        for world in args.ranks:
            start = time.perf_counter()
            results[stage, world] = run_distributed(
                f"{__file__}:measure",
                world,
                args=(stage, args.dim, args.hidden, args.depth, args.jit, args.recompute),
                timeout=args.timeout,
            )
            print(f"stage {stage}, {world} rank(s): {time.perf_counter() - start:.1f} s", flush=True)

    first = next(iter(results.values()))[0]
    print(
        f"\nper-rank host memory, MLP dim {args.dim} hidden {args.hidden} depth {args.depth} "
        f"({first['param_bytes'] / 2**20:.0f} MiB of fp32 parameters), "
        f"{'mindspore.jit' if args.jit else 'PyNative'}{', blocks recomputed' if args.recompute else ''}; "
        "MB = MiB, max over ranks"
    )
    print(
        f"{'stage':>5} {'ranks':>5} {'built':>8} {'bwd peak':>9} {'bwd extra':>10} {'vs 1 rank':>9} "
        f"{'grads kept':>10} {'step peak':>10} {'bwd s':>6}"
    )
    extra = {}
    for (stage, world), per_rank in results.items():
        worst = max(per_rank, key=lambda r: r["backward_peak_mb"] - r["built_mb"])
        extra[stage, world] = worst["backward_peak_mb"] - worst["built_mb"]
        base = extra.get((stage, min(args.ranks)))
        ratio = f"{extra[stage, world] / base:.2f}" if base else "-"
        print(
            f"{stage:>5} {world:>5} {worst['built_mb']:>8.0f} {worst['backward_peak_mb']:>9.0f} "
            f"{extra[stage, world]:>10.0f} {ratio:>9} {worst['grad_bytes'] / 2**20:>10.0f} "
            f"{max(r['step_peak_mb'] for r in per_rank):>10.0f} {max(r['backward_s'] for r in per_rank):>6.2f}"
        )
    print("bwd extra = peak during forward + backward minus the resident memory just before it")
    base_world = min(args.ranks)
    mg_bench(
        "mg-parallel/zero_backward_peak",
        *(
            (
                f"ZeRO stage {stage} on {world} ranks, backward peak above the built state per rank"
                + (" (jit)" if args.jit else "")
                + (" (recompute)" if args.recompute else ""),
                extra[stage, world],
                extra[stage, base_world],
                f"same stage, {base_world} rank" + "s" * (base_world > 1),
                "MiB",
                "lower",
            )
            for stage in args.stages
            for world in args.ranks
            if world != base_world
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
