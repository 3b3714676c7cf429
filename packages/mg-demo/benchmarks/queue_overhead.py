"""What the web app adds to a generation: direct `Generator.generate` vs the same request through the real
`mg-demo` server (HTTP, Gradio queue, file transfer), sequential and with concurrent users.

    python packages/mg-demo/benchmarks/queue_overhead.py [--checkpoint DIR] [--requests 10] [--steps 30]

Without --checkpoint it serves an untrained tiny pipeline (16 frames, 64x64). Prints side-by-side times and
ratios measured in one run; on a shared machine the absolute numbers are noisy, the ratios less so.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(checkpoint: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "mg_demo", "--checkpoint", checkpoint, "--port", str(port), "--no-jit"]
    server = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "config", timeout=5):
                return server, url
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"mg-demo exited with {server.returncode}") from None
            time.sleep(0.5)
    raise SystemExit("mg-demo did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="pipeline folder or run directory (default: a tiny random one)")
    parser.add_argument("--requests", type=int, default=10, help="requests per measurement")
    parser.add_argument("--steps", type=int, default=30, help="sampling steps per request")
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from mg_train.runtime import setup_mindspore

    setup_mindspore()
    from gradio_client import Client

    from mg_demo.generation import Generator
    from mg_train.pipeline import MovieGenPipeline

    checkpoint = args.checkpoint
    if checkpoint is None:
        from mg_train.testing import tiny_random_pipeline

        checkpoint = str(Path(tempfile.mkdtemp(prefix="mg-demo-bench-")) / "pipeline")
        tiny_random_pipeline(seed=0, frames=16, size=(64, 64)).save_pretrained(checkpoint)
    generator = Generator(MovieGenPipeline.from_pretrained(checkpoint, jit=False), tempfile.mkdtemp())
    default = generator.defaults()
    form = (
        "a red circle moving left",
        "",
        "Video",
        default.frames,
        default.height,
        default.width,
        args.steps,
        5.0,
    )
    requests = [generator.request(*form, seed) for seed in range(args.requests)]

    generator.generate(requests[0])  # warm-up
    direct = []
    for request in requests:
        start = time.perf_counter()
        generator.generate(request)
        direct.append(time.perf_counter() - start)

    server, url = start_server(checkpoint)
    try:
        client = Client(url, verbose=False)
        client.predict(*form, 0, api_name="/generate")  # warm-up
        served = []
        for seed in range(args.requests):
            start = time.perf_counter()
            client.predict(*form, seed, api_name="/generate")
            served.append(time.perf_counter() - start)
        clients = [Client(url, verbose=False) for _ in range(args.requests)]
        start = time.perf_counter()
        jobs = [c.submit(*form, seed, api_name="/generate") for seed, c in enumerate(clients)]
        for job in jobs:
            job.result(timeout=3600)
        concurrent_wall = time.perf_counter() - start
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)

    d, s = statistics.median(direct), statistics.median(served)
    print(
        f"{args.requests} requests, {default.frames} frames {default.height}x{default.width}, {args.steps} steps"
    )
    print(f"  direct Generator.generate   median {d:6.2f} s / request")
    print(f"  via HTTP, one user          median {s:6.2f} s / request   ratio {s / d:5.2f}x direct")
    print(
        f"  via HTTP, {args.requests} concurrent users  {concurrent_wall:6.2f} s wall            "
        f"ratio {concurrent_wall / sum(direct):5.2f}x the direct sequential total"
    )
    mg_bench(
        "mg-demo/queue_overhead",
        ("one request via HTTP, one user (median)", s, d, "direct Generator.generate", "s", "lower"),
        (
            f"{args.requests} requests via HTTP, concurrent users (wall)",
            concurrent_wall,
            sum(direct),
            "direct, sequential total",
            "s",
            "lower",
        ),
    )


if __name__ == "__main__":
    main()
