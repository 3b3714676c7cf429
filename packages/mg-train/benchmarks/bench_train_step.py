"""Transformer train step of `mg-train train`, PyNative vs `mindspore.jit`, side by side (justifies `train.jit`).

One step is exactly what the training loop runs: the rectified-flow loss forward + backward over the model's
parameters (`transformer_train.rectified_flow_losses` through `engine.compile_fn`, compiled or not) and the
optimizer step (`optim.OptimizerStep`: reduce, global norm, non-finite check, clip, scheduled LR, AdamW; with
`jit` the norm, the clip and the AdamW kernels run compiled, as `train.jit` has them). Inputs are random, shaped like
the runs they stand for; text is three tiny-encoder embeddings (64, 48, 32 wide) of 64 tokens each.

    python packages/mg-train/benchmarks/bench_train_step.py [--repeats 5] [--only tiny,quickstart]

Prints, per model and mode, the first step (compile included for jit) and the best of `--repeats` further
steps (best, not median: on a shared machine the fastest run is the least disturbed), jit's speed-up, and the
optimizer step alone (step minus forward+backward) in both modes.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

# name -> (TransformerConfig overrides of the tiny preset, batch, latent (T', h, w), description)
MODELS = {
    "tiny": ({}, 16, (2, 8, 8), "tiny preset (2 layers, hidden 64), quickstart shapes"),
    "quickstart": (
        {"num_layers": 4, "hidden_size": 128, "ffn_size": 352, "num_heads": 4},
        16,
        (2, 8, 8),
        "quickstart model (4 layers, hidden 128), latents 16x2x8x8, batch 16",
    ),
    "small": (
        {
            "num_layers": 8,
            "hidden_size": 384,
            "ffn_size": 1024,
            "num_heads": 6,
            "pos_embed_max_size": (4, 16, 16),
        },
        4,
        (4, 16, 16),
        "small (8 layers, hidden 384), latents 16x4x16x16 (256 tokens), batch 4",
    ),
}
TEXT_DIMS = {"ul2": 64, "byt5": 48, "metaclip": 32}
TEXT_TOKENS = 64


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def build(overrides: dict, jit: bool):
    """Model, step function and optimizer step as `transformer_train.run` builds them (one process)."""
    import mindspore as ms

    import mg_parallel as mp
    from mg_train import engine, optim
    from mg_train.config.schema import OptimConfig
    from mg_train.transformer_train import rectified_flow_losses
    from mg_transformer import MovieGenTransformer, TransformerConfig

    ms.set_seed(0)
    config = TransformerConfig.preset("tiny", text_dims=TEXT_DIMS, **overrides)
    model = MovieGenTransformer(config)
    ctx = mp.init_parallel()
    cfg = OptimConfig(lr=1e-4, warmup_steps=10, grad_clip=1.0)
    zero, optimizer = optim.build_optimizer(model, cfg, ctx, jit=jit)
    stepper = optim.OptimizerStep(zero, optimizer, cfg, 1000, ctx, jit=jit)
    null = (
        [np.zeros((TEXT_TOKENS, d), np.float32) for d in TEXT_DIMS.values()],
        [np.zeros(TEXT_TOKENS, np.float32) for _ in TEXT_DIMS],
    )
    train_loss, _ = rectified_flow_losses(model, null, 1e-5)
    grad_step = engine.compile_fn(ms.value_and_grad(train_loss, None, zero.params), jit)
    return model, grad_step, stepper


def inputs(batch: int, latent: tuple[int, int, int], seed: int):
    from mindspore import Tensor

    rng = np.random.default_rng(seed)
    x0 = Tensor(rng.standard_normal((batch, 16, *latent)).astype(np.float32))
    embs = tuple(
        Tensor(rng.standard_normal((batch, TEXT_TOKENS, d)).astype(np.float32)) for d in TEXT_DIMS.values()
    )
    lengths = rng.integers(8, TEXT_TOKENS, batch)
    mask = (np.arange(TEXT_TOKENS)[None] < lengths[:, None]).astype(np.float32)
    masks = tuple(Tensor(mask) for _ in TEXT_DIMS)
    t = Tensor(rng.uniform(0.05, 0.95, batch).astype(np.float32))
    noise = Tensor(rng.standard_normal((batch, 16, *latent)).astype(np.float32))
    drop = Tensor(rng.random(batch) < 0.1)
    return x0, embs, masks, t, noise, drop


def time_mode(overrides: dict, batch: int, latent, jit: bool, repeats: int) -> tuple[float, float, float]:
    """(first step, best further step, best further forward+backward) in seconds; every part waits for its
    results."""
    _, grad_step, stepper = build(overrides, jit)
    steps, passes = [], []
    for step in range(repeats + 1):
        args = inputs(batch, latent, step)  # fresh values each step, like real batches (no constant folding)
        start = time.perf_counter()
        loss, grads = grad_step(*args)
        loss.asnumpy(), grads[-1].asnumpy()
        middle = time.perf_counter()
        result = stepper(grads, loss, 1, step)
        steps.append(time.perf_counter() - start)
        passes.append(middle - start)
        assert np.isfinite(result.loss)
    return steps[0], min(steps[1:]), min(passes[1:])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed steps after the first (best is reported)"
    )
    parser.add_argument("--only", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    args = parser.parse_args()

    from mg_train.runtime import setup_mindspore

    setup_mindspore()  # PyNative + synchronous op launch on CPU, as `mg-train` runs
    rows = []
    for name in args.only.split(","):
        overrides, batch, latent, description = MODELS[name]
        _, eager, eager_pass = time_mode(overrides, batch, latent, False, args.repeats)
        jit_first, jit, jit_pass = time_mode(overrides, batch, latent, True, args.repeats)
        rows.append((name, description, eager, eager_pass, jit, jit_pass, jit_first))
        print(f"{name}: PyNative {eager:.3f} s/step, jit {jit:.3f} s/step", flush=True)
    print()
    print("s/step = forward+backward + optimizer step; fwd+bwd alone in parentheses; best of --repeats")
    print(
        f"{'model':<11}{'PyNative':>17}{'jit':>17}{'speed-up':>10}{'opt step':>17}{'jit 1st step':>14}  shapes"
    )
    for name, description, eager, eager_pass, jit, jit_pass, jit_first in rows:
        optimizer_steps = f"{eager - eager_pass:.3f} -> {jit - jit_pass:.3f}"
        print(
            f"{name:<11}{eager:>8.3f} ({eager_pass:.3f}){jit:>8.3f} ({jit_pass:.3f}){eager / jit:>9.1f}x"
            f"{optimizer_steps:>17}{jit_first:>13.1f}s  {description}"
        )
    mg_bench(
        "mg-train/bench_train_step",
        *(
            (f"{name} train step, jit (best)", jit, eager, "PyNative", "s", "lower")
            for name, _, eager, _, jit, _, _ in rows
        ),
    )


if __name__ == "__main__":
    main()
