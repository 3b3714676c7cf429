"""Peak memory and time of the two CPU attention paths (plain vs chunked online-softmax) at 4k and 16k tokens.

Each case runs in its own subprocess, so its peak resident memory (getrusage maxrss, minus the process's
baseline after the inputs exist) is its own. Plain attention at 16k tokens needs several (heads x 16k x 16k)
float32 matrices (8.6 GB each at 8 heads), so by default it is not run but estimated from the 4k case
(x16 time and memory); `--run-plain-16k` runs it anyway.

    python packages/mg-transformer/benchmarks/bench_attention.py [--seqs 4096 16384] [--heads 8] [--chunk 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def run_case(
    path: str, seq: int, heads: int, head_dim: int, chunk: int, key_chunk: int, backward: bool
) -> dict:
    """Body of one subprocess: time a forward (and forward+backward) pass and report the memory peak."""
    import resource

    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from mg_transformer.attention import ChunkedAttention, PlainAttention

    rng = np.random.default_rng(0)
    q, k, v, dout = (
        Tensor(rng.standard_normal((1, heads, seq, head_dim)).astype(np.float32)) for _ in range(4)
    )
    core = PlainAttention() if path == "plain" else ChunkedAttention(chunk, key_chunk)
    warm = Tensor(np.zeros((1, heads, 64, head_dim), np.float32))
    core(warm, warm, warm).asnumpy()  # load kernels before the baseline
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    start = time.perf_counter()
    core(q, k, v).asnumpy()
    forward = time.perf_counter() - start
    result = {"forward_s": forward}
    if backward:

        def loss(q, k, v):
            return (core(q, k, v) * dout).sum()

        grad_fn = ms.grad(loss, grad_position=(0, 1, 2))
        start = time.perf_counter()
        grads = grad_fn(q, k, v)
        grads[0].asnumpy()
        result["forward_backward_s"] = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["peak_extra_mb"] = (peak - baseline) / 1024  # ru_maxrss is in KiB on Linux
    return result


def spawn(path: str, seq: int, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        json.dumps([path, seq, args.heads, args.head_dim, args.chunk, args.key_chunk, not args.forward_only]),
    ]
    out = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["killed (out of memory?)"])[-1][:120]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seqs", type=int, nargs="+", default=[4096, 16384], help="sequence lengths (tokens)"
    )
    parser.add_argument("--heads", type=int, default=8, help="attention heads (batch is 1)")
    parser.add_argument("--head-dim", type=int, default=64, help="head dimension")
    parser.add_argument("--chunk", type=int, default=2048, help="query block length of the chunked path")
    parser.add_argument("--key-chunk", type=int, default=4096, help="key block length of the chunked path")
    parser.add_argument("--forward-only", action="store_true", help="skip the forward+backward timing")
    parser.add_argument(
        "--run-plain-16k", action="store_true", help="run plain attention above 8k tokens too"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(*json.loads(args.child))))
        return

    print(
        f"attention, 1 x {args.heads} heads x S x {args.head_dim}, float32, PyNative; chunked blocks "
        f"{args.chunk} queries x {args.key_chunk} keys"
    )
    rows = {}
    for seq in sorted(args.seqs):
        for path in ("plain", "chunked"):
            if path == "plain" and seq > 8192 and not args.run_plain_16k:
                base = min(s for s in args.seqs)
                scale = (seq / base) ** 2
                measured = rows.get(("plain", base), {})
                rows[(path, seq)] = {
                    key: value * scale for key, value in measured.items() if isinstance(value, float)
                } | {"estimated": f"x{scale:.0f} of {base}"}
                continue
            print(f"  running {path} at {seq} tokens ...", flush=True)
            rows[(path, seq)] = spawn(path, seq, args)

    def fmt(value, unit):
        return f"{value:9.2f} {unit}" if isinstance(value, float) else f"{'-':>9} {unit}"

    print(f"\n{'path':8} {'tokens':>7} {'forward':>12} {'fwd+bwd':>12} {'peak extra':>13}  note")
    for (path, seq), row in rows.items():
        note = row.get("error") or (f"estimated ({row['estimated']})" if "estimated" in row else "")
        print(
            f"{path:8} {seq:7d} {fmt(row.get('forward_s'), 's')} {fmt(row.get('forward_backward_s'), 's')} "
            f"{fmt(row.get('peak_extra_mb'), 'MB')}  {note}"
        )
    print("\nratios chunked / plain:")
    figures = []
    for seq in sorted(args.seqs):
        plain, chunked = rows.get(("plain", seq), {}), rows.get(("chunked", seq), {})
        parts = []
        for key, label in (
            ("forward_s", "time fwd"),
            ("forward_backward_s", "time fwd+bwd"),
            ("peak_extra_mb", "memory"),
        ):
            if isinstance(plain.get(key), float) and isinstance(chunked.get(key), float) and plain[key] > 0:
                parts.append(f"{label} {chunked[key] / plain[key]:.2f}x")
            if isinstance(chunked.get(key), float):
                reference = plain.get(key) if isinstance(plain.get(key), float) else None
                name = (
                    None if reference is None else "plain" + (" (estimated)" if "estimated" in plain else "")
                )
                unit = "MB" if key == "peak_extra_mb" else "s"
                figures.append(
                    (f"chunked, {seq} tokens, {label}", chunked[key], reference, name, unit, "lower")
                )
        suffix = " (plain estimated)" if "estimated" in plain else ""
        print(f"  {seq:6d} tokens: " + ", ".join(parts) + suffix)
    mg_bench("mg-transformer/bench_attention", *figures)


if __name__ == "__main__":
    main()
