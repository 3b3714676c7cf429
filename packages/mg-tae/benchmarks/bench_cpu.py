"""CPU speed and memory of mg-tae, printed side by side in one run.

1. GFLOP/s of the TAE's 3x3 convs: our matmul path vs MindSpore's native conv (default oneDNN, and with
   ONEDNN_MAX_CPU_ISA=AVX2 in a subprocess) vs the plain matmul rate.
2. Full TAE encode+decode (SD3.5-sized config) on 1x3x8x32x32: our default path vs MindSpore's default
   configuration (native convs, default oneDNN), as a ratio.
3. Our path alone on 1x3x16x128x128: time and peak RSS.
4. Tiled decode peak RSS at two video lengths (flat working memory) and tiled-vs-untiled PSNR.

Usage: python packages/mg-tae/benchmarks/bench_cpu.py [--quick]   (each part runs in its own subprocess)
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


def _timeit(fn, reps: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part_convs(native_only: bool) -> dict:
    import numpy as np
    from mindspore import Tensor, mint

    from mg_tae import conv

    out = {}
    shapes = [(8, 128, 64), (8, 256, 32), (8, 512, 16)]
    rng = np.random.default_rng(0)
    for n, c, hw in shapes:
        flops = 2 * n * hw * hw * c * c * 9
        x = Tensor(rng.standard_normal((n, hw, hw, c)).astype(np.float32))
        w = Tensor((rng.standard_normal((c, c, 3, 3)) * 0.05).astype(np.float32))
        b = Tensor(np.zeros(c, np.float32))
        key = f"{n}x{c}x{hw}x{hw}"
        # The native default conv is ~100x slower: time one frame and scale.
        x1 = x[:1]
        t_native = _timeit(lambda x1=x1, w=w, b=b: conv.conv3x3_native(x1, w, b).asnumpy(), reps=1) * n
        out[key] = {"native": flops / t_native / 1e9}
        if not native_only:
            t_ours = _timeit(lambda x=x, w=w, b=b: conv.conv3x3_rows(x, w, b).asnumpy())
            cols = Tensor(rng.standard_normal((n * hw * hw, 9 * c)).astype(np.float32))
            w2 = Tensor(rng.standard_normal((9 * c, c)).astype(np.float32))
            t_mm = _timeit(lambda cols=cols, w2=w2: mint.matmul(cols, w2).asnumpy())
            out[key].update(ours=flops / t_ours / 1e9, same_gemm=flops / t_mm / 1e9)
    if not native_only:
        a = Tensor(rng.standard_normal((2048, 2048)).astype(np.float32))
        out["matmul_2048"] = 2 * 2048**3 / _timeit(lambda: mint.matmul(a, a).asnumpy()) / 1e9
    return out


def part_full(backend: str, shape: tuple[int, ...], reps: int) -> dict:
    import numpy as np
    from mindspore import Tensor

    from mg_tae import TAEConfig, TemporalAutoencoder

    model = TemporalAutoencoder(TAEConfig(conv_backend=backend), seed=0)
    x = Tensor(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32))

    def run():
        z = model.encode(x).mean
        return model.decode(z, num_frames=shape[2]).asnumpy()

    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    best = first if reps == 0 else min(first, _timeit(run, reps=reps))
    return {"seconds": best, "peak_rss_mb": _rss_mb()}


def part_tiled_decode(latent_frames: int, size: int) -> dict:
    import numpy as np
    from mindspore import Tensor

    from mg_tae import TAEConfig, TemporalAutoencoder

    model = TemporalAutoencoder(TAEConfig(), seed=0)
    model.enable_tiling(tile_frames=32, overlap_frames=16, tile_size=None)
    z = Tensor(
        np.random.default_rng(0)
        .standard_normal((1, 16, latent_frames, size // 8, size // 8))
        .astype(np.float32)
    )
    base = _rss_mb()
    start = time.perf_counter()
    y = model.decode(z)
    seconds = time.perf_counter() - start
    output_mb = y.nbytes / 2**20
    return {
        "frames": int(y.shape[2]),
        "seconds": seconds,
        "peak_rss_mb": _rss_mb(),
        "rss_before_mb": base,
        "output_mb": output_mb,
    }


def part_tiling_psnr() -> dict:
    """PSNR of tiled vs untiled decode: temporal tiles (temporal layers given random weights so tiles interact)
    and spatial tiles, on the tiny config with random weights."""
    import numpy as np
    from mindspore import Tensor

    from mg_tae import TAEConfig, TemporalAutoencoder
    from mg_tae.metrics import psnr

    model = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
    rng = np.random.default_rng(0)
    for name, p in model.parameters_and_names():
        if ".temporal." in name or "temporal_" in name:
            value = p.asnumpy()
            p.set_data(Tensor((value + 0.1 * rng.standard_normal(value.shape)).astype(np.float32)))
    out = {}
    for label, shape, kwargs in (
        ("temporal", (1, 3, 64, 32, 32), dict(tile_frames=32, overlap_frames=16, tile_size=None)),
        (
            "spatial",
            (1, 3, 8, 128, 128),
            dict(tile_frames=32, overlap_frames=16, tile_size=64, overlap_size=32),
        ),
    ):
        x = Tensor(np.clip(rng.standard_normal(shape) * 0.5, -1, 1).astype(np.float32))
        model.disable_tiling()
        z = model.encode(x).mean
        y = model.decode(z, num_frames=shape[2]).asnumpy()
        model.enable_tiling(**kwargs)
        zt = model.encode(x).mean.asnumpy()
        yt = model.decode(z, num_frames=shape[2]).asnumpy()
        lo, hi = y.min(), y.max()  # PSNR over the untiled output's own range
        out[label] = {
            "decode_psnr_db": psnr((yt - lo) / (hi - lo) * 2 - 1, (y - lo) / (hi - lo) * 2 - 1),
            "encode_rel_err": float(np.abs(zt - z.asnumpy()).max() / np.abs(z.asnumpy()).max()),
        }
    return out


def _child(args: list[str], env: dict | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the slow MindSpore-default full-model run")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        os.environ.setdefault("GLOG_v", "3")
        import warnings

        import mindspore as ms

        # Synchronous PyNative for every variant alike: on a busy 2-core machine the asynchronous op pipeline
        # made small models up to ~15x slower (see the README's CPU notes).
        ms.set_context(pynative_synchronize=True)
        warnings.simplefilter("ignore")
        kind, *rest = args.child
        if kind == "convs":
            result = part_convs(native_only=rest == ["native"])
        elif kind == "full":
            result = part_full(rest[0], tuple(int(v) for v in rest[1].split("x")), int(rest[2]))
        elif kind == "tiled":
            result = part_tiled_decode(int(rest[0]), int(rest[1]))
        else:
            result = part_tiling_psnr()
        print(json.dumps(result))
        return

    print("== 1. TAE 3x3 convs, GFLOP/s (fp32) ==", flush=True)
    ours = _child(["convs"])
    avx2 = _child(["convs", "native"], env={"ONEDNN_MAX_CPU_ISA": "AVX2"})
    mm = ours.pop("matmul_2048")
    convs = []
    print(f"plain matmul 2048^3: {mm:.1f} GFLOP/s")
    print(
        f"{'shape (N x C x H x W)':24s} {'ours':>8s} {'native':>8s} {'nativeAVX2':>10s} {'same GEMM':>10s} {'ours/matmul':>12s}"
    )
    for key, r in ours.items():
        print(
            f"{key:24s} {r['ours']:8.1f} {r['native']:8.2f} {avx2[key]['native']:10.1f} {r['same_gemm']:10.1f} "
            f"{r['ours'] / mm:12.0%}"
        )
        convs += [
            (
                f"3x3 conv {key}",
                r["ours"],
                r["native"],
                "MindSpore conv, default oneDNN",
                "GFLOP/s",
                "higher",
            ),
            (
                f"3x3 conv {key}",
                r["ours"],
                avx2[key]["native"],
                "MindSpore conv, oneDNN AVX2",
                "GFLOP/s",
                "higher",
            ),
        ]

    print("\n== 2. Full TAE (SD3.5 config) encode+decode 1x3x8x32x32 ==", flush=True)
    fast = _child(["full", "matmul", "1x3x8x32x32", "2"])
    print(f"ours (matmul convs): {fast['seconds']:.2f} s")
    full = [("TAE encode+decode 1x3x8x32x32", fast["seconds"], None, None, "s", "lower")]
    if not args.quick:
        slow = _child(["full", "native", "1x3x8x32x32", "0"])
        print(f"MindSpore default (native convs, default oneDNN): {slow['seconds']:.1f} s")
        print(f"speed-up: {slow['seconds'] / fast['seconds']:.0f}x")
        avx = _child(["full", "native", "1x3x8x32x32", "1"], env={"ONEDNN_MAX_CPU_ISA": "AVX2"})
        print(f"native convs with ONEDNN_MAX_CPU_ISA=AVX2: {avx['seconds']:.2f} s")
        full = [
            (*full[0][:2], slow["seconds"], "MindSpore default (native convs, default oneDNN)", "s", "lower"),
            (*full[0][:2], avx["seconds"], "native convs, oneDNN AVX2", "s", "lower"),
        ]

    print("\n== 3. Ours alone, SD3.5 config, 1x3x16x128x128 encode+decode ==", flush=True)
    big = _child(["full", "matmul", "1x3x16x128x128", "0"])
    print(f"time {big['seconds']:.1f} s, peak RSS {big['peak_rss_mb']:.0f} MB")
    full += [
        ("TAE encode+decode 1x3x16x128x128", big["seconds"], None, None, "s", "lower"),
        ("TAE encode+decode 1x3x16x128x128 peak RSS", big["peak_rss_mb"], None, None, "MB", "lower"),
    ]

    print("\n== 4. Tiled decode (SD3.5 config, 32-frame tiles, 16 overlap, 64x64) ==", flush=True)
    decodes = []
    for lat in (4, 16):
        r = _child(["tiled", str(lat), "64"])
        decodes.append(r)
        print(
            f"{r['frames']:4d} frames: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
            f"(model loaded {r['rss_before_mb']:.0f} MB, output {r['output_mb']:.1f} MB)"
        )
    short, long = decodes
    tiled = [
        (
            f"tiled decode peak RSS, {long['frames']} frames",
            long["peak_rss_mb"],
            short["peak_rss_mb"],
            f"same, {short['frames']} frames",
            "MB",
            "lower",
        )
    ]
    r = _child(["psnr"])
    for label, v in r.items():
        print(
            f"tiled vs untiled, {label} tiles (tiny config, random weights): decode PSNR {v['decode_psnr_db']:.1f} dB, "
            f"encode max relative error {v['encode_rel_err']:.3g}"
        )
        tiled += [
            (f"tiled vs untiled decode PSNR, {label} tiles", v["decode_psnr_db"], None, None, "dB", "higher"),
            (
                f"tiled vs untiled encode max rel. error, {label}",
                v["encode_rel_err"],
                None,
                None,
                "rel.",
                "lower",
            ),
        ]
    for group in (convs, full, tiled):
        mg_bench("mg-tae/bench_cpu", *group)


if __name__ == "__main__":
    main()
