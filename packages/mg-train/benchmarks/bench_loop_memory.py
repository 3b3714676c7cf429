"""Host memory of `mg-train train`'s loop next to a plain MindSpore loop on the same model and batch, by phase.

    python packages/mg-train/benchmarks/bench_loop_memory.py [--layers 12 --hidden 1024 --ffn 2816 --heads 16]
        [--batch 2] [--steps 3] [--jit]

Each loop runs in its own process (so their peaks do not mix) and reports its resident memory (VmRSS) after
building the model and optimizer, after every step, after the checkpoint save and after the export, and its
peak (VmHWM). The plain loop is `mindspore.value_and_grad` + `nn.AdamWeightDecay` on random inputs of the run's
shapes; the mg-train loop is `transformer_train.run` on small synthetic caches (`mg_train.testing`), with the
same model, the same batch, validation (2 batches) at step 0 and at the last step, one checkpoint at the last
step and the final export. The default model has 212M parameters (0.85 GB of fp32 weights). Target: mg-train's peak within 1.3x the plain loop's, in PyNative and jit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def rss_mb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def model_overrides(args) -> dict:
    return {
        "num_layers": args.layers,
        "hidden_size": args.hidden,
        "ffn_size": args.ffn,
        "num_heads": args.heads,
        "pos_embed_max_size": [2, 4, 4],
    }


def plain(args) -> dict:
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor, nn

    from mg_train.runtime import setup_mindspore
    from mg_transformer import MovieGenTransformer, TransformerConfig, rectified_flow_loss

    setup_mindspore()
    phases = {"start": rss_mb()}
    dims = {"ul2": 64, "byt5": 48, "metaclip": 32}
    config = TransformerConfig.preset("tiny", text_dims=dims, **model_overrides(args))
    model = MovieGenTransformer(config)
    params = model.trainable_params()
    optimizer = nn.AdamWeightDecay(params, learning_rate=1e-4)

    def loss_fn(x, embs, masks, t, noise):
        return rectified_flow_loss(model, x, embs, masks, t, noise)

    grad_fn = ms.value_and_grad(loss_fn, None, params)
    if args.jit:
        compiled = ms.jit(grad_fn)
        grad_fn = lambda x, e, m, t, n: compiled(x, ms.mutable(e), ms.mutable(m), t, n)  # noqa: E731
    phases["built"] = rss_mb()
    rng = np.random.default_rng(0)
    for step in range(args.steps):
        x = Tensor(rng.standard_normal((args.batch, 16, 2, 4, 4)).astype(np.float32))
        embs = tuple(
            Tensor(rng.standard_normal((args.batch, 16, d)).astype(np.float32)) for d in dims.values()
        )
        masks = tuple(Tensor(np.ones((args.batch, 16), np.float32)) for _ in dims)
        t = Tensor(rng.uniform(0, 1, args.batch).astype(np.float32))
        noise = Tensor(rng.standard_normal((args.batch, 16, 2, 4, 4)).astype(np.float32))
        loss, grads = grad_fn(x, embs, masks, t, noise)
        optimizer(grads)
        loss.asnumpy()
        phases[f"step {step + 1}"] = rss_mb()
    phases["peak"] = rss_mb("VmHWM")
    return {"parameters": sum(p.size for p in params), "phases": phases}


def engine(args) -> dict:
    from mg_train import engine as engine_module
    from mg_train import testing
    from mg_train.progress import Progress
    from mg_train.runtime import setup_mindspore
    from mg_train.transformer_train import run

    setup_mindspore()
    phases = {"start": rss_mb()}
    root = Path(tempfile.mkdtemp(prefix="mg_mem_"))
    data = testing.make_training_data(root / "data", n=12)
    phases["data"] = rss_mb()
    original_update = Progress.update
    original_describe = engine_module.resolve_resume
    original_export = None

    def update(self, step, **metrics):
        if "loss" in metrics:
            phases[f"step {step}"] = rss_mb()
        if "val_loss" in metrics:
            phases[f"validated {step}"] = rss_mb()
        return original_update(self, step, **metrics)

    def resolve_resume(resume, manager, ctx=None):
        phases["built"] = rss_mb()  # model, optimizer (and its ZeRO wrapper) built; nothing trained yet
        return original_describe(resume, manager, ctx)

    Progress.update = update
    engine_module.resolve_resume = resolve_resume
    from mg_train import transformer_train

    original_export = transformer_train.TransformerTask.export

    def export(self, arrays, out):
        phases["saved"] = rss_mb()  # the last checkpoint is written before the export starts
        result = original_export(self, arrays, out)
        phases["exported"] = rss_mb()
        return result

    transformer_train.TransformerTask.export = export
    cfg = testing.transformer_train_config(
        data,
        root / "run",
        model={"preset": "tiny", "overrides": model_overrides(args)},
        data={
            "manifest": data.train,
            "val_manifest": data.val,
            "frames": 16,
            "size": [32, 32],
            "batch_size": args.batch,
        },
        flow={"text_dropout": 0.1},
        optim={"lr": 1e-4, "warmup_steps": 0, "grad_clip": 1.0},
        train={
            "steps": args.steps,
            "jit": args.jit,
            "save_every": args.steps,
            "log_every": 1,
            "val_every": args.steps,
            "val_batches": 2,
        },
    )
    run(cfg)
    phases["peak"] = rss_mb("VmHWM")
    shutil.rmtree(root, ignore_errors=True)  # a few hundred MB of checkpoints per run
    return {"phases": phases}


def _child(kind: str, argv: list[str]) -> dict:
    env = {**os.environ, "GLOG_v": "3"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} loop failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--ffn", type=int, default=2816)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--jit", action="store_true", help="compile forward+backward (train.jit)")
    parser.add_argument("--child", choices=("plain", "engine"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = plain(args) if args.child == "plain" else engine(args)
        print(json.dumps(result))
        return
    argv = [a for a in sys.argv[1:]]
    start = time.perf_counter()
    base, ours = _child("plain", argv), _child("engine", argv)
    params = base["parameters"]
    print(
        f"{params / 1e6:.0f}M parameters ({params * 4 / 2**30:.2f} GiB fp32), batch {args.batch}, "
        f"{args.steps} steps, {'jit' if args.jit else 'PyNative'}; {time.perf_counter() - start:.0f} s"
    )
    names = list(dict.fromkeys([*base["phases"], *ours["phases"]]))
    print(f"{'phase':<14}{'plain MB':>12}{'mg-train MB':>14}")
    for name in names:
        a, b = base["phases"].get(name), ours["phases"].get(name)
        print(f"{name:<14}{'' if a is None else f'{a:,.0f}':>12}{'' if b is None else f'{b:,.0f}':>14}")
    ratio = ours["phases"]["peak"] / base["phases"]["peak"]
    print(f"peak ratio mg-train / plain: {ratio:.2f} (target <= 1.3)")
    mode = "jit" if args.jit else "PyNative"
    mg_bench(
        "mg-train/bench_loop_memory",
        (
            f"peak host memory, {params / 1e6:.0f}M-parameter train loop, {mode}",
            ours["phases"]["peak"],
            base["phases"]["peak"],
            "plain value_and_grad + AdamWeightDecay loop",
            "MB",
            "lower",
        ),
    )


if __name__ == "__main__":
    main()
