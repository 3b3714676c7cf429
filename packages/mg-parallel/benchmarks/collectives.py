"""Time native collectives against their AllReduce-based equivalents on 2 ranks (CPU, msrun).

    python packages/mg-parallel/benchmarks/collectives.py [--sizes-mib 1 16] [--repeats 5] [--ranks 2]

On CPU only AllReduce (any group) and AllGather/Broadcast (world group) are native; the table shows what
the exact equivalents cost next to them, and the emulated reduce-scatter and all-to-all that have no native
kernel there. Each figure is the median of `--repeats` timed calls after one warm-up, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def measure(sizes_mib: list[float], repeats: int) -> dict:
    import mindspore as ms

    import mg_parallel as mp

    ctx = mp.init_parallel()
    group = ctx.world_group
    n = group.size
    out = {}
    for size in sizes_mib:
        count = int(size * 2**20 / 4) // (n * n) * (n * n)
        x = ms.Tensor(np.random.default_rng(group.rank).normal(size=(count,)).astype(np.float32))
        cells = {
            "all_reduce": mp.AllReduce(group),
            "all_gather native": mp.AllGather(group, 0, "native"),
            "all_gather emulated": mp.AllGather(group, 0, "emulated"),
            "broadcast native": mp.Broadcast(group, 0, "native"),
            "broadcast emulated": mp.Broadcast(group, 0, "emulated"),
            "reduce_scatter emulated": mp.ReduceScatter(group, 0, "emulated"),
            "all_to_all emulated": mp.AllToAll(group, 0, 0, "emulated"),
        }
        for name, cell in cells.items():
            cell(x).asnumpy()  # warm-up
            times = []
            for _ in range(repeats):
                mp.all_reduce(ms.Tensor(np.zeros(1, np.float32)), group).asnumpy()  # line the ranks up
                start = time.perf_counter()
                cell(x).asnumpy()
                times.append(time.perf_counter() - start)
            out[(size, name)] = statistics.median(times) * 1e3
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mib", type=float, nargs="+", default=[1.0, 16.0], help="tensor sizes in MiB")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per collective (default 5)")
    parser.add_argument("--ranks", type=int, default=2, help="number of processes (default 2)")
    args = parser.parse_args()

    from mg_parallel.testing import run_distributed

    print(f"launching {args.ranks} ranks ...", flush=True)
    results = run_distributed(
        f"{__file__}:measure", args.ranks, args=(args.sizes_mib, args.repeats), timeout=900
    )
    times = results[0]
    print(f"\nmedian ms per call on rank 0 ({args.ranks} ranks, fp32)")
    for size in args.sizes_mib:
        print(f"-- {size:g} MiB")
        for (s, name), ms_ in times.items():
            if s != size:
                continue
            native = times.get((s, name.replace("emulated", "native")))
            ratio = f"   {ms_ / native:.2f}x native" if "emulated" in name and native else ""
            print(f"   {name:<26} {ms_:9.2f}{ratio}")
    rows = []
    for (size, name), ms_ in times.items():
        if "emulated" in name:  # ours; reference: the native op, or the native all_reduce it is built on
            native = name.replace("emulated", "native")
            reference = native if (size, native) in times else "all_reduce"
            rows.append((f"{name} {size:g} MiB", ms_, times[(size, reference)], reference, "ms", "lower"))
    mg_bench("mg-parallel/collectives", *rows)


if __name__ == "__main__":
    sys.exit(main())
