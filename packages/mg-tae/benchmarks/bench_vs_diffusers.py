"""mg-tae against diffusers' AutoencoderKL (the SD3.5 VAE config on PyTorch CPU), side by side in one run.

1. Encode + decode time and peak memory (RSS high-water mark) of each, every measurement in its own process: ours
   called as a user calls it (`TemporalAutoencoder(TAEConfig())`, `encode`, `decode`; no `set_context`, no
   environment variables; tiled with mg-tae's default tiling where asked), diffusers with the frames as a batch
   of images. Random weights, one warm-up, then the best of `--reps` timed runs.
2. 3x3 conv GFLOP/s at the TAE's shapes: ours (mg_tae.conv's matmul path, synchronous launch as `encode` and
   `decode` run it) vs PyTorch's conv2d, and each framework's 2048^3 matmul rate (MindSpore's also with its
   default asynchronous launch, which halves it on 2 cores).

Needs torch and diffusers (`pip install mg-tae[interop]`); without them only our side runs.
Usage: python packages/mg-tae/benchmarks/bench_vs_diffusers.py [--sizes 16x128 32x256t] [--reps 1]
(`t` after a size: our side tiled).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CONV_SHAPES = [(8, 128, 64), (8, 256, 32), (8, 512, 16)]  # (frames, channels, side) of the TAE's 3x3 convs


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _best(fn, reps: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def child_ours(frames: int, side: int, tiled: bool, reps: int) -> dict:
    import numpy as np
    from mindspore import Tensor

    from mg_tae import TAEConfig, TemporalAutoencoder

    model = TemporalAutoencoder(TAEConfig(), seed=0)
    if tiled:
        model.enable_tiling()
    x = Tensor(np.random.default_rng(0).uniform(-1, 1, (1, 3, frames, side, side)).astype(np.float32))

    def run():
        return model.decode(model.encode(x).mean, num_frames=frames).asnumpy()

    return {"seconds": _best(run, reps), "peak_mb": _peak_rss_mb()}


def child_diffusers(frames: int, side: int, reps: int) -> dict:
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    from mg_tae.inflate import SD35_VAE_DIFFUSERS_CONFIG

    vae = AutoencoderKL(**SD35_VAE_DIFFUSERS_CONFIG).eval()
    x = torch.rand(frames, 3, side, side) * 2 - 1

    def run():
        with torch.no_grad():
            return vae.decode(vae.encode(x).latent_dist.mode()).sample.numpy()

    return {"seconds": _best(run, reps), "peak_mb": _peak_rss_mb(), "threads": torch.get_num_threads()}


def child_convs_ours(launch: str) -> dict:
    """Conv and matmul rates in one launch mode: "sync" is what `encode`/`decode` switch to on CPU
    (`mg_tae.speed.prefer_synchronous_launch`), "async" MindSpore's default (its dispatch threads share the two
    cores with the kernels; only the matmul is reported for it)."""
    import numpy as np
    from mindspore import Tensor, mint

    from mg_tae import conv
    from mg_tae.speed import prefer_synchronous_launch

    if launch == "sync":
        prefer_synchronous_launch()
    rng = np.random.default_rng(0)
    out = {}
    for n, c, hw in CONV_SHAPES if launch == "sync" else []:
        x = Tensor(rng.standard_normal((n, hw, hw, c)).astype(np.float32))  # channels-last, as the TAE runs
        w = Tensor((rng.standard_normal((c, c, 3, 3)) * 0.05).astype(np.float32))
        b = Tensor(np.zeros(c, np.float32))
        seconds = _best(lambda x=x, w=w, b=b: conv.conv3x3_rows(x, w, b).asnumpy(), 3)
        out[f"{n}x{c}x{hw}x{hw}"] = 2 * n * hw * hw * c * c * 9 / seconds / 1e9
    a = Tensor(rng.standard_normal((2048, 2048)).astype(np.float32))
    key = "matmul 2048^3" if launch == "sync" else "matmul 2048^3, MindSpore's default async launch"
    out[key] = 2 * 2048**3 / _best(lambda: mint.matmul(a, a).asnumpy(), 3) / 1e9
    return out


def child_convs_torch() -> dict:
    import torch

    torch.manual_seed(0)
    out = {}
    with torch.no_grad():
        for n, c, hw in CONV_SHAPES:
            x = torch.randn(n, c, hw, hw)
            w = torch.randn(c, c, 3, 3) * 0.05
            b = torch.zeros(c)
            seconds = _best(lambda x=x, w=w, b=b: torch.nn.functional.conv2d(x, w, b, padding=1), 3)
            out[f"{n}x{c}x{hw}x{hw}"] = 2 * n * hw * hw * c * c * 9 / seconds / 1e9
        a = torch.randn(2048, 2048)
        out["matmul 2048^3"] = 2 * 2048**3 / _best(lambda: a @ a, 3) / 1e9
    return out


def _child(*args: str) -> dict | None:
    """Run this script with `--child ...` in a fresh process; its last stdout line is the JSON result."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "GLOG_v": "3"},
    )
    if done.returncode != 0:
        how = "killed (out of memory?)" if done.returncode == -9 else f"exit code {done.returncode}"
        print(f"child {args} failed, {how}:\n{done.stderr[-3000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _has_torch() -> bool:
    done = subprocess.run([sys.executable, "-c", "import torch, diffusers"], capture_output=True)
    return done.returncode == 0


def _parse_size(text: str) -> tuple[int, int, bool]:
    tiled = text.endswith("t")
    frames, side = text.rstrip("t").split("x")
    return int(frames), int(side), tiled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["16x128", "32x256t"], help="FRAMESxSIDE[t]")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--no-convs", action="store_true", help="skip the conv and matmul rates")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "ours":
            frames, side, tiled = _parse_size(rest[0])
            result = child_ours(frames, side, tiled, args.reps)
        elif kind == "diffusers":
            frames, side, _ = _parse_size(rest[0])
            result = child_diffusers(frames, side, args.reps)
        elif kind == "convs-ours":
            result = child_convs_ours(rest[0])
        else:
            result = child_convs_torch()
        print(json.dumps(result))
        return

    torch_ok = _has_torch()
    if not torch_ok:
        print(
            "torch/diffusers not installed (pip install mg-tae[interop]): only our side runs", file=sys.stderr
        )
    reps = ("--reps", str(args.reps))
    rows = []
    print(
        f"{'clip':<16}{'ours s':>9}{'diffusers s':>13}{'ratio':>8}{'ours MB':>10}{'diffusers MB':>14}{'ratio':>8}"
    )
    for size in args.sizes:
        frames, side, tiled = _parse_size(size)
        print(f"... {size}: ours", file=sys.stderr, flush=True)
        ours = _child("ours", size, *reps)
        print(f"... {size}: diffusers", file=sys.stderr, flush=True)
        theirs = _child("diffusers", size, *reps) if torch_ok else None
        label = f"1x3x{frames}x{side}x{side}{' tiled' if tiled else ''}"
        if ours is None:  # e.g. killed by the OOM killer: still show the reference's figures
            ours = {"seconds": float("nan"), "peak_mb": float("nan")}
        ref_s = theirs["seconds"] if theirs else float("nan")
        ref_mb = theirs["peak_mb"] if theirs else float("nan")
        print(
            f"{label:<16}{ours['seconds']:>9.2f}{ref_s:>13.2f}{ours['seconds'] / ref_s:>8.2f}"
            f"{ours['peak_mb']:>10.0f}{ref_mb:>14.0f}{ours['peak_mb'] / ref_mb:>8.2f}"
        )
        rows.append(
            (f"encode+decode {label}", ours["seconds"], ref_s, "diffusers AutoencoderKL", "s", "lower")
        )
        rows.append((f"peak RSS {label}", ours["peak_mb"], ref_mb, "diffusers AutoencoderKL", "MB", "lower"))
    if not args.no_convs:
        print("... conv rates", file=sys.stderr, flush=True)
        ours = {**(_child("convs-ours", "sync") or {}), **(_child("convs-ours", "async") or {})}
        theirs = (_child("convs-torch") if torch_ok else None) or {}
        print(f"\n{'3x3 conv (N x C x H x W)':<26}{'ours GF/s':>11}{'PyTorch GF/s':>14}{'ratio':>8}")
        for key, rate in ours.items():
            ref = theirs.get(key.split(",")[0], float("nan"))
            print(f"{key:<26}{rate:>11.1f}{ref:>14.1f}{rate / ref:>8.2f}")
            rows.append((key, rate, ref, "PyTorch", "GFLOP/s", "higher"))
    mg_bench("mg-tae/bench_vs_diffusers", *rows)


if __name__ == "__main__":
    main()
