"""Text-encoder throughput: prompts per second per encoder at batch 1 and 16, tiny and small presets.

Each MindSpore runtime mode runs in its own child process (the launch mode is process-wide):
"async" is MindSpore's default PyNative pipeline, "blocking" sets MS_DEV_LAUNCH_BLOCKING=1 (ops launched
synchronously by the calling thread). The table prints both side by side with their ratio.

    python packages/mg-transformer/benchmarks/bench_text_encoders.py                 # tiny + small, both modes
    python packages/mg-transformer/benchmarks/bench_text_encoders.py --sizes tiny --repeats 5

Prompts are Meta's Movie Gen Video Bench prompts when `shared/data/moviegen_video_bench` is found beside the
repository (pass --prompts FILE for another one-prompt-per-line file), else generated captions. Weights are
random (presets), which does not change the cost. The "small" presets are T5-v1.1-small-like (UL2), byt5-small's
encoder (ByT5) and a CLIP-B-like text tower with 256 positions (MetaCLIP); real UL2 is ~40x the small one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODES = {"async": {}, "blocking": {"MS_DEV_LAUNCH_BLOCKING": "1"}}


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def find_prompts(path: str | None) -> list[str]:
    if path:
        return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    for parent in Path(__file__).resolve().parents:
        bench = parent / "shared" / "data" / "moviegen_video_bench" / "MovieGenVideoBench.txt"
        if bench.is_file():
            return [line.strip() for line in bench.read_text().splitlines() if line.strip()]
    words = [
        "a",
        "red",
        "blue",
        "green",
        "circle",
        "square",
        "star",
        "moves",
        "slides",
        "left",
        "right",
        "across",
        "the",
        "bright",
        "dark",
        "background",
    ]
    return [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(12 + i % 20)) for i in range(64)]


def run_child(args: argparse.Namespace) -> None:
    """Time every (size, encoder, batch) in this process and print one JSON line per result."""
    from mg_transformer.text import TextEncoder

    prompts = find_prompts(args.prompts)
    for size in args.sizes:
        for name in args.encoders:
            t0 = time.perf_counter()
            encoder = TextEncoder.preset(name, size, seed=0)
            build = time.perf_counter() - t0
            for batch in args.batches:
                chunks = [prompts[(i * batch) % len(prompts) :][:batch] for i in range(args.repeats + 1)]
                chunks = [c if len(c) == batch else (c + prompts)[:batch] for c in chunks]
                encoder.encode(chunks[0])  # warm-up: kernel selection, first allocations
                times = []
                for chunk in chunks[1:]:
                    t = time.perf_counter()
                    out = encoder.encode(chunk)
                    times.append(time.perf_counter() - t)
                result = {
                    "size": size,
                    "encoder": name,
                    "batch": batch,
                    "tokens": float(out.lengths.mean()),
                    "max_length": encoder.max_length,
                    "prompts_per_s": batch / statistics.median(times),
                    "best_prompts_per_s": batch / min(times),
                    "build_s": build,
                }
                print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["tiny", "small"],
        choices=["tiny", "small"],
        help="preset sizes to time (default: tiny small)",
    )
    parser.add_argument(
        "--encoders",
        nargs="+",
        default=["ul2", "byt5", "metaclip"],
        choices=["ul2", "byt5", "metaclip"],
        help="encoders to time (default: all three)",
    )
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16], help="batch sizes (default: 1 16)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed batches per case; the median counts (default 3)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=list(MODES),
        choices=list(MODES),
        help="MindSpore launch modes to compare, each in a child process (default: both)",
    )
    parser.add_argument(
        "--prompts", help="a text file with one prompt per line (default: Movie Gen Video Bench)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return

    results: dict[str, dict[tuple, dict]] = {}
    for mode in args.modes:
        print(f"running mode {mode} ...", flush=True)
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--sizes",
            *args.sizes,
            "--encoders",
            *args.encoders,
            "--batches",
            *map(str, args.batches),
            "--repeats",
            str(args.repeats),
        ]
        if args.prompts:
            cmd += ["--prompts", args.prompts]
        env = {**os.environ, **MODES[mode]}
        env.setdefault("GLOG_v", "3")
        if mode == "async":
            env.pop("MS_DEV_LAUNCH_BLOCKING", None)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"mode {mode} failed:\n{proc.stderr[-3000:]}")
        rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        results[mode] = {(r["size"], r["encoder"], r["batch"]): r for r in rows}

    print(
        f"\ntext encoders, prompts/s (median of {args.repeats} batches; fp32, PyNative, "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f})"
    )
    header = f"{'size':<6} {'encoder':<9} {'batch':>5} {'tokens':>7}"
    header += "".join(f" {m:>10}" for m in args.modes)
    if len(args.modes) == 2:
        header += f" {args.modes[1] + '/' + args.modes[0]:>16}"
    print(header)
    first = results[args.modes[0]]
    figures = []
    for key in first:
        size, name, batch = key
        row = f"{size:<6} {name:<9} {batch:>5} {first[key]['tokens']:>7.0f}"
        speeds = [results[m][key]["prompts_per_s"] for m in args.modes]
        row += "".join(f" {s:>10.2f}" for s in speeds)
        if len(speeds) == 2:
            row += f" {speeds[1] / speeds[0]:>15.2f}x"
        print(row)
        if "blocking" in results and "async" in results:  # ours: the launch mode mg-train sets on CPU
            ours, ref = results["blocking"][key]["prompts_per_s"], results["async"][key]["prompts_per_s"]
            figures.append(
                (f"{name} {size}, batch {batch}, blocking", ours, ref, "async", "prompts/s", "higher")
            )
        else:
            figures.append(
                (
                    f"{name} {size}, batch {batch}, {args.modes[0]}",
                    speeds[0],
                    None,
                    None,
                    "prompts/s",
                    "higher",
                )
            )
    mg_bench("mg-transformer/bench_text_encoders", *figures)


if __name__ == "__main__":
    main()
