"""Bytes per rank held by ZeRO stages 0-3 on 1, 2 and 4 ranks (CPU, msrun), with ratios to one rank.

    python packages/mg-parallel/benchmarks/zero_memory.py [--dim 256] [--hidden 1024] [--depth 4] [--ranks 1 2 4]

Counts what each rank keeps: model parameters, gradients after the stage's reduction (what the optimizer
step receives and what gradient accumulation would store), optimizer state (AdamW moments) and the chunk
copies stages 1-2 update. The transient full gradients of one backward pass are not counted: MindSpore's
value_and_grad returns them all at once in every stage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def measure(dim: int, hidden: int, depth: int) -> dict:
    """Runs on every rank (or in-process for one rank): memory report per stage."""
    import mindspore as ms
    from mindspore import mint, nn
    from mindspore.experimental.optim import AdamW

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
                x = block(x)
            return x

    ctx = mp.init_parallel()
    out = {}
    for stage in (0, 1, 2, 3):
        ms.set_seed(0)
        model = Stack()
        zero = mp.ZeroOptimizer(model, lambda params: AdamW(params, lr=1e-3), stage=stage, ctx=ctx)
        x = ms.Tensor(np.ones((2, 8, dim), np.float32))
        grads = ms.grad(lambda a, m=model: m(a).sum(), None, zero.params)(x)
        out[stage] = zero.memory_report(zero.reducer(grads))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dim", type=int, default=256, help="model width (default 256)")
    parser.add_argument("--hidden", type=int, default=1024, help="MLP hidden width (default 1024)")
    parser.add_argument("--depth", type=int, default=4, help="number of MLP blocks (default 4)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4], help="world sizes to measure")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per msrun launch (default 900)")
    args = parser.parse_args()

    from mg_parallel.testing import run_distributed

    reports = {}
    for world in args.ranks:
        start = time.perf_counter()
        print(f"measuring {world} rank(s) ...", flush=True)
        if world == 1:
            reports[world] = measure(args.dim, args.hidden, args.depth)
        else:
            results = run_distributed(
                f"{__file__}:measure", world, args=(args.dim, args.hidden, args.depth), timeout=args.timeout
            )
            reports[world] = results[0]
        print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)

    keys = ("params", "grads", "optimizer_state", "shard_copies")
    base_world = min(reports)
    print(f"\nbytes per rank (MLP dim {args.dim}, hidden {args.hidden}, depth {args.depth}; AdamW)")
    print(
        f"{'stage':>5} {'ranks':>5} "
        + " ".join(f"{k:>16}" for k in keys)
        + "   ratio to 1 rank (params grads optim)"
    )
    for stage in (0, 1, 2, 3):
        base = reports[base_world][stage]
        for world in sorted(reports):
            row = reports[world][stage]
            ratios = " ".join(f"{row[k] / base[k]:.3f}" for k in ("params", "grads", "optimizer_state"))
            print(f"{stage:>5} {world:>5} " + " ".join(f"{row[k]:>16,}" for k in keys) + f"   {ratios}")
    mg_bench(
        "mg-parallel/zero_memory",
        *(
            (
                f"ZeRO stage {stage} on {world} ranks, memory per rank",
                sum(reports[world][stage][k] for k in keys) / 2**20,
                sum(reports[base_world][stage][k] for k in keys) / 2**20,
                f"same stage, {base_world} rank" + "s" * (base_world > 1),
                "MiB",
                "lower",
            )
            for stage in (0, 1, 2, 3)
            for world in sorted(reports)
            if world != base_world
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
