"""Train-step throughput of a small Movie Gen transformer as a fraction of this machine's matmul rate.

One step = rectified-flow loss forward, backward and an AdamW update (`nn.AdamWeightDecay` by default), on fixed
inputs, in PyNative and in graph mode (`mindspore.jit` over the whole step); forward+backward alone is timed too. Model FLOPs are counted analytically (3x the forward matmul FLOPs, the
usual MFU convention; recomputation is not counted). The matmul rate is a 2048^3 float32 matmul measured in the
same process. Both oneDNN settings are measured, each in its own subprocess because ONEDNN_MAX_CPU_ISA must be set
before MindSpore runs its first kernel: the default (fast matmul) and ONEDNN_MAX_CPU_ISA=AVX2 (fast convolutions,
slower matmul; what the TAE wants).

    python packages/mg-transformer/benchmarks/bench_train_step.py [--layers 4 --hidden 512 --latent 8 32 32]
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


def forward_flops(config, batch: int, latent: tuple[int, int, int], text_tokens: int) -> float:
    """Matmul FLOPs of one forward pass (multiply-adds counted as 2)."""
    pt, ph, pw = config.patch_size
    tokens = (latent[0] // pt) * (latent[1] // ph) * (latent[2] // pw)
    h, f, L = config.hidden_size, config.ffn_size, text_tokens * len(config.text_dims)
    per_layer = (
        8 * tokens * h * h  # self-attention q, k, v, out
        + 4 * tokens * tokens * h  # self-attention scores and weighted sum
        + 4 * tokens * h * h  # cross-attention q, out
        + 4 * L * h * h  # cross-attention k, v on the text tokens
        + 4 * tokens * L * h  # cross-attention scores and weighted sum
        + 6 * tokens * h * f  # SwiGLU
    )
    outside = 2 * tokens * h * config.patch_features * 2 + sum(
        2 * text_tokens * d * h for d in config.text_dims.values()
    )
    return batch * (config.num_layers * per_layer + outside)


def matmul_rate(m: int, k: int, n: int, repeats: int = 5) -> float:
    """GFLOP/s of a float32 (m x k) @ (k x n) matmul, best of `repeats`."""
    import numpy as np
    from mindspore import Tensor, mint

    rng = np.random.default_rng(0)
    a = Tensor(rng.standard_normal((m, k)).astype(np.float32))
    b = Tensor(rng.standard_normal((k, n)).astype(np.float32))
    mint.matmul(a, b).asnumpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        mint.matmul(a, b).asnumpy()
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


TORCH_MATMUL = """
import json, time, torch
a = torch.randn(2048, 2048)
a @ a
best = float("inf")
for _ in range(5):
    start = time.perf_counter()
    a @ a
    best = min(best, time.perf_counter() - start)
print(json.dumps({"gflops": 2 * 2048**3 / best / 1e9, "threads": torch.get_num_threads()}))
"""


def torch_matmul_rate() -> float | None:
    """PyTorch's 2048^3 float32 matmul GFLOP/s in a subprocess (None without torch): the machine's reference
    rate, measured in the same run as the steps."""
    out = subprocess.run([sys.executable, "-c", TORCH_MATMUL], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return float(json.loads(out.stdout.strip().splitlines()[-1])["gflops"])


def make_steps(grad_fn, optimizer):
    """(forward+backward only, full step with the optimizer update) as plain functions over the batch."""

    def forward_backward(latents, embs, masks, t, noise):
        return grad_fn(
            latents, embs, masks, t, noise
        )  # (loss, grads): returning grads keeps the backward alive

    def train_step(latents, embs, masks, t, noise):
        loss, grads = grad_fn(latents, embs, masks, t, noise)
        optimizer(grads)
        return loss

    return forward_backward, train_step


def timed(fn, args, steps: int) -> tuple[float, float]:
    """(first call, best of `steps` further calls) in seconds, waiting for every result. Best, not median:
    on a shared machine the fastest run is the one least disturbed by other processes."""

    def call():
        out = fn(*args)
        first = out[0] if isinstance(out, tuple) else out
        first.asnumpy()

    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return first, min(times)


def make_optimizer(name: str, params):
    import mindspore as ms
    from mindspore.experimental.optim import AdamW

    if name == "adamweightdecay":
        return ms.nn.AdamWeightDecay(params, learning_rate=1e-4, weight_decay=0.01)
    return AdamW(params, lr=1e-4, weight_decay=0.01)


def run_child(options: dict) -> dict:
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from mg_transformer import MovieGenTransformer, RectifiedFlowLoss, TransformerConfig

    if options["launch"] == "sync":
        ms.runtime.launch_blocking()  # before the first kernel; what mg-train sets on CPU
    ms.set_seed(0)
    config = TransformerConfig.preset(
        "tiny",
        num_layers=options["layers"],
        hidden_size=options["hidden"],
        num_heads=options["heads"],
        ffn_size=options["ffn"],
        text_dims={"ul2": options["text_dim"]},
        pos_embed_max_size=(64, 64, 64),
        attention_backend=options["attention"],
    )
    latent = tuple(options["latent"])
    batch, text_tokens = options["batch"], options["text_tokens"]
    rng = np.random.default_rng(0)
    latents = Tensor(rng.standard_normal((batch, 16, *latent)).astype(np.float32))
    embs = (Tensor(rng.standard_normal((batch, text_tokens, options["text_dim"])).astype(np.float32)),)
    masks = (Tensor(np.ones((batch, text_tokens), np.float32)),)
    t = Tensor(rng.uniform(0.05, 0.95, batch).astype(np.float32))
    noise = Tensor(rng.standard_normal(latents.shape).astype(np.float32))
    args = (latents, embs, masks, t, noise)
    tokens = (
        batch
        * (latent[0] // config.patch_size[0])
        * (latent[1] // config.patch_size[1])
        * (latent[2] // config.patch_size[2])
    )
    rate = matmul_rate(2048, 2048, 2048)
    shaped_rate = matmul_rate(tokens, config.hidden_size, config.ffn_size)
    flops = 3 * forward_flops(config, batch, latent, text_tokens)
    result = {"matmul_gflops": rate, "shaped_gflops": shaped_rate, "step_gflop": flops / 1e9, "modes": {}}

    for mode in options["modes"]:
        model = MovieGenTransformer(config)
        loss_cell = RectifiedFlowLoss(model)
        optimizer = make_optimizer(options["optimizer"], model.trainable_params())
        forward_backward, train_step = make_steps(
            ms.value_and_grad(loss_cell, None, optimizer.parameters), optimizer
        )
        if mode == "graph":
            forward_backward, train_step = ms.jit(forward_backward), ms.jit(train_step)
        _, fb_seconds = timed(forward_backward, args, options["steps"])
        first, seconds = timed(train_step, args, options["steps"])
        result["modes"][mode] = {
            "first_step_s": first,
            "step_s": seconds,
            "fwd_bwd_s": fb_seconds,
            "gflops": flops / seconds / 1e9,
            "fraction": flops / seconds / 1e9 / rate,
            "shaped_fraction": flops / seconds / 1e9 / shaped_rate,
            "fwd_bwd_fraction": flops / fb_seconds / 1e9 / rate,
        }
        print(
            f"    {mode}: {seconds:.3f} s/step ({fb_seconds:.3f} s forward+backward)",
            file=sys.stderr,
            flush=True,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks")
    parser.add_argument("--hidden", type=int, default=512, help="hidden size")
    parser.add_argument("--heads", type=int, default=8, help="attention heads")
    parser.add_argument("--ffn", type=int, default=1536, help="SwiGLU inner size")
    parser.add_argument("--latent", type=int, nargs=3, default=[8, 32, 32], help="latent T H W (2048 tokens)")
    parser.add_argument("--batch", type=int, default=1, help="batch size")
    parser.add_argument("--text-tokens", type=int, default=64, help="text tokens (one encoder)")
    parser.add_argument("--text-dim", type=int, default=512, help="text embedding width")
    parser.add_argument("--attention", default="auto", help="attention backend: auto, chunked or plain")
    parser.add_argument(
        "--optimizer",
        default="adamweightdecay",
        help="adamweightdecay (nn.AdamWeightDecay) or adamw (experimental)",
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode (median reported)")
    parser.add_argument("--modes", nargs="+", default=["pynative", "graph"], help="pynative and/or graph")
    parser.add_argument(
        "--launch",
        choices=["sync", "async"],
        default="sync",
        help="op launch: sync (what mg-train sets on CPU; the matmul rate too is measured under it) or async "
        "(MindSpore's default: its dispatch threads share the cores, halving even the 2048^3 matmul on 2 cores)",
    )
    parser.add_argument(
        "--settings", nargs="+", default=["default", "AVX2"], help="oneDNN settings: default and/or AVX2"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return

    options = {key: getattr(args, key) for key in vars(args) if key not in ("child", "settings")}
    results = {}
    for setting in args.settings:
        env = os.environ.copy()
        env.pop("ONEDNN_MAX_CPU_ISA", None)
        if setting == "AVX2":
            env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
        print(f"oneDNN {setting}: running {', '.join(args.modes)} ...", flush=True)
        out = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(options)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        if out.returncode != 0:
            print(f"  failed (exit {out.returncode})")
            continue
        results[setting] = json.loads(out.stdout.strip().splitlines()[-1])

    torch_rate = torch_matmul_rate()
    print(
        "PyTorch 2048^3 matmul: "
        + (f"{torch_rate:.1f} GF/s" if torch_rate else "not measured (torch is not installed here)")
    )
    tokens = (args.latent[0]) * (args.latent[1] // 2) * (args.latent[2] // 2)
    print(
        f"\n{args.layers} layers, hidden {args.hidden}, ffn {args.ffn}, {args.heads} heads, batch {args.batch} x "
        f"{tokens} tokens + {args.text_tokens} text tokens, attention {args.attention}, float32"
    )
    print(
        f"{'oneDNN':8} {'2048^3 mm':>11} {'model mm':>10} {'mode':9} {'s/step':>7} {'first':>6} {'model':>10} "
        f"{'/2048^3':>8} {'/model mm':>9} {'fwd+bwd':>8} {'/2048^3':>8}"
    )
    for setting, result in results.items():
        for mode, row in result["modes"].items():
            print(
                f"{setting:8} {result['matmul_gflops']:6.1f} GF/s {result['shaped_gflops']:5.1f} GF/s {mode:9} "
                f"{row['step_s']:7.3f} {row['first_step_s']:6.1f} {row['gflops']:5.1f} GF/s {100 * row['fraction']:7.1f}% "
                f"{100 * row['shaped_fraction']:8.1f}% {row['fwd_bwd_s']:7.3f}s {100 * row['fwd_bwd_fraction']:7.1f}%"
            )
    if results:
        step = next(iter(results.values()))["step_gflop"]
        print(
            f"(model FLOPs per step: {step:.1f} GFLOP; '/2048^3' = model FLOP/s over a 2048^3 matmul's, '/model mm' "
            f"over a (tokens x hidden) @ (hidden x ffn) matmul's, both measured in the same process; times are the "
            f"best of {args.steps}; 'first' includes graph compilation; optimizer {args.optimizer})"
        )
    for setting, result in results.items():
        modes = result["modes"]
        if "pynative" in modes and "graph" in modes:
            print(
                f"{setting}: graph mode is {modes['pynative']['step_s'] / modes['graph']['step_s']:.2f}x PyNative"
            )
    if "default" in results and "AVX2" in results:
        for mode in args.modes:
            a, b = results["default"]["modes"].get(mode), results["AVX2"]["modes"].get(mode)
            if a and b:
                print(f"{mode}: AVX2 step time is {b['step_s'] / a['step_s']:.2f}x the default's")
    figures = []
    for setting, result in results.items():
        modes, rate = result["modes"], result["matmul_gflops"]
        for mode, row in modes.items():
            name = f"{mode} step FLOP rate, oneDNN {setting}"
            figures.append((name, row["gflops"], rate, "2048^3 matmul", "GFLOP/s", "higher"))
            if torch_rate:
                figures.append(
                    (name, row["gflops"], torch_rate, "PyTorch 2048^3 matmul", "GFLOP/s", "higher")
                )
        if "pynative" in modes and "graph" in modes:
            graph, eager = modes["graph"]["step_s"], modes["pynative"]["step_s"]
            figures.append((f"graph step time, oneDNN {setting}", graph, eager, "PyNative", "s", "lower"))
    for mode in args.modes:
        a, b = (results.get(setting, {}).get("modes", {}).get(mode) for setting in ("default", "AVX2"))
        if a and b:
            figures.append(
                (f"{mode} step time, oneDNN default", a["step_s"], b["step_s"], "oneDNN AVX2", "s", "lower")
            )
    mg_bench("mg-transformer/bench_train_step", *figures)


if __name__ == "__main__":
    main()
