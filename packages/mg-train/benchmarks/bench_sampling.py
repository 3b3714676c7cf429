"""Sampling time of the quickstart's pipeline: 8 prompts x 50 steps, compiled (jit, the default) vs eager, with the
time of each stage (text encoding, denoising, TAE decoding), each mode in its own process.

Uses `--pipeline DIR` (default: runs/quickstart/pipeline when it exists), else an untrained pipeline of the
quickstart's sizes (tiny TAE, the quickstart's transformer overrides, 16 frames at 64x64): the same work.
Usage: python packages/mg-train/benchmarks/bench_sampling.py [--prompts 8] [--steps 50] [--pipeline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

QUICKSTART_PIPELINE = Path("runs/quickstart/pipeline")
PROMPTS = [
    f"a {colour} {shape} moving {direction}"
    for colour, shape, direction in [
        ("red", "circle", "left"),
        ("blue", "square", "up"),
        ("green", "triangle", "right"),
        ("yellow", "circle", "down"),
    ]
    * 4
]


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def child(args: argparse.Namespace) -> dict:
    from mg_train.pipeline import MovieGenPipeline
    from mg_train.runtime import setup_mindspore

    setup_mindspore()
    jit = args.child == "jit"
    if args.pipeline:
        pipe = MovieGenPipeline.from_pretrained(args.pipeline, jit=jit)
        source = str(args.pipeline)
    else:
        from mg_train.config.schema import QuickstartConfig
        from mg_train.testing import tiny_random_pipeline

        pipe = tiny_random_pipeline(
            seed=0, frames=16, size=(64, 64), jit=jit, **QuickstartConfig().transformer
        )
        source = "untrained, quickstart sizes"
    prompts = PROMPTS[: args.prompts]
    stages: dict[str, float] = {}
    last = [time.perf_counter()]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        stages[stage] = stages.get(stage, 0.0) + now - last[0]
        last[0] = now

    pipe.generate(prompts[:1], steps=2, seed=0)  # warm-up: compiles the step functions for this shape once
    pipe.generate(prompts, steps=2, seed=0)
    stages.clear()
    start = last[0] = time.perf_counter()
    pipe.generate(prompts, steps=args.steps, seed=0, progress=progress)
    return {"seconds": time.perf_counter() - start, "stages": stages, "source": source}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--pipeline", default=None, help="a pipeline folder (default: the quickstart's if present)"
    )
    parser.add_argument("--child", choices=("jit", "eager"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline is None and QUICKSTART_PIPELINE.is_dir():
        args.pipeline = str(QUICKSTART_PIPELINE)
    if args.child:
        print(json.dumps(child(args)))
        return
    results = {}
    for mode in ("jit", "eager"):
        print(f"... {mode}", file=sys.stderr, flush=True)
        command = [
            sys.executable,
            __file__,
            "--child",
            mode,
            "--prompts",
            str(args.prompts),
            "--steps",
            str(args.steps),
        ]
        if args.pipeline:
            command += ["--pipeline", args.pipeline]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "GLOG_v": "3"})
        if done.returncode != 0:
            sys.exit(f"{mode} run failed:\n{done.stderr[-3000:]}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    jit, eager = results["jit"], results["eager"]
    print(f"pipeline: {jit['source']}; {args.prompts} prompts x {args.steps} steps")
    print(f"{'stage':<10}{'jit s':>9}{'eager s':>10}")
    for stage in ("text", "denoise", "decode"):
        print(f"{stage:<10}{jit['stages'].get(stage, 0.0):>9.2f}{eager['stages'].get(stage, 0.0):>10.2f}")
    print(f"{'total':<10}{jit['seconds']:>9.2f}{eager['seconds']:>10.2f}")
    mg_bench(
        "mg-train/bench_sampling",
        (
            f"sampling {args.prompts} prompts x {args.steps} steps",
            jit["seconds"],
            eager["seconds"],
            "eager",
            "s",
            "lower",
        ),
        (
            "denoising",
            jit["stages"].get("denoise", 0.0),
            eager["stages"].get("denoise", 0.0),
            "eager",
            "s",
            "lower",
        ),
    )


if __name__ == "__main__":
    main()
