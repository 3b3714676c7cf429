"""Per-rank host memory of `mg-train train` for a ~300M-parameter transformer at 1, 2 and 4 ranks (msrun, CPU).

    python packages/mg-train/benchmarks/bench_memory_ranks.py [--layouts single,dp2_zero3,dp4_zero3,tp2,...]
        [--layers 18 --hidden 1024 --ffn 2816 --heads 16]

Each layout is one `mg-train train` run (PyNative, one optimizer step, a checkpoint at that step, then the
export) on small synthetic caches, so activations are negligible and what a rank holds is model state. Every
rank reports its resident memory (VmRSS) and the peak (VmHWM, reset at each boundary) of three phases: init
(the model built lazily, every parallel cut made, this rank's pieces written, the optimizer built), the first
step, and the checkpoint save. The model-state part of a rank is its memory after the step minus what it held
before the model was built; with ZeRO-3 over N ranks (or tensor parallelism) it should fall as 1/N of one
process's: the table prints it next to 1/N of the single process's and the rest (the constant that does not
shrink: collective buffers, MindSpore's memory pool, the largest tensor in flight), and next to what
`mg_parallel.planner.state_bytes` counts for the layout (parameters, gradients, AdamW moments).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

LAYOUTS = {  # name -> (ranks, parallel section)
    "single": (1, {}),
    "dp2_zero3": (2, {"zero_stage": 3}),
    "dp4_zero3": (4, {"zero_stage": 3}),
    "tp2": (2, {"tp": 2}),
    "tp4": (4, {"tp": 4}),
    "dp2_tp2_zero3": (4, {"tp": 2, "zero_stage": 3}),
}
GLOBAL_BATCH = 4


def mg_bench(benchmark: str, *rows: tuple) -> None:
    """Print one figure group for tools/bench_summary.py: rows of (figure, ours, reference, reference_name,
    unit, better), better being "lower" or "higher" (the convention is in tools/README.md)."""
    keys = ("figure", "ours", "reference", "reference_name", "unit", "better")
    table = [dict(zip(keys, row, strict=True)) for row in rows]
    print("MG-BENCH " + json.dumps({"benchmark": benchmark, "rows": table}, default=float), flush=True)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def model_overrides(args: dict) -> dict:
    return {
        "num_layers": args["layers"],
        "hidden_size": args["hidden"],
        "ffn_size": args["ffn"],
        "num_heads": args["heads"],
        "pos_embed_max_size": [2, 4, 4],
    }


def rank_run(data: dict, out: str, parallel: dict, args: dict) -> dict:
    """One training run on this rank; returns its memory by phase (MB)."""
    from types import SimpleNamespace

    from mg_train import engine, testing
    from mg_train.progress import Progress
    from mg_train.runtime import setup_mindspore
    from mg_train.transformer_train import run

    setup_mindspore()
    phases: dict[str, float] = {}
    dp = args["ranks"] // (parallel.get("tp", 1) * parallel.get("cp", 1) * parallel.get("sp", 1))
    cfg = testing.transformer_train_config(
        SimpleNamespace(**data),
        Path(out),
        model={"preset": "tiny", "overrides": model_overrides(args)},
        data={"manifest": data["train"], "frames": 16, "size": [32, 32], "batch_size": GLOBAL_BATCH // dp},
        optim={"lr": 1e-4, "warmup_steps": 0},
        train={"steps": 1, "save_every": 1, "log_every": 1, "gradient_checkpointing": args["recompute"]},
        parallel=parallel,
    )
    write_config, update, save = engine.write_run_config, Progress.update, engine.save_training_checkpoint

    def mark(name: str) -> None:
        phases[f"{name} rss"] = _status_mb("VmRSS")
        phases[f"{name} peak"] = _status_mb("VmHWM")
        _reset_peak()

    def built(*a, **k):
        mark("init")
        return write_config(*a, **k)

    def stepped(self, step, **metrics):
        if "loss" in metrics:
            mark("step")
        return update(self, step, **metrics)

    def saving(*a, **k):
        result = save(*a, **k)
        mark("save")
        return result

    engine.write_run_config, Progress.update, engine.save_training_checkpoint = built, stepped, saving
    try:
        phases["before rss"] = _status_mb("VmRSS")
        _reset_peak()
        run(cfg)
    finally:
        engine.write_run_config, Progress.update, engine.save_training_checkpoint = write_config, update, save
    return phases


def planned_state_mb(args: dict, ranks: int, parallel: dict) -> float:
    from mg_parallel import planner
    from mg_train import planning
    from mg_transformer import TransformerConfig

    config = TransformerConfig.preset(
        "tiny", text_dims={"ul2": 64, "byt5": 48, "metaclip": 32}, **model_overrides(args)
    )
    tp = parallel.get("tp", 1)
    layout = planner.Layout(dp=ranks // tp, tp=tp, zero_stage=parallel.get("zero_stage", 0))
    return planner.state_bytes(planning.parameter_specs(config), layout).total / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--ffn", type=int, default=2816)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument(
        "--recompute", action="store_true", help="train.gradient_checkpointing (as the recipes)"
    )
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mg_mem_ranks_"))
    try:
        report(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # every layout's checkpoints: tens of GB at the default size


def report(args: argparse.Namespace, root: Path) -> None:
    from mg_parallel.testing import run_distributed
    from mg_train import testing

    data = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(testing.make_training_data(root / "data")).items()
    }
    names = args.layouts.split(",")
    results = {}
    for name in names:
        ranks, parallel = LAYOUTS[name]
        start = time.perf_counter()
        params = {**vars(args), "ranks": ranks}
        results[name] = run_distributed(
            f"{__file__}:rank_run", ranks, args=(data, str(root / name), parallel, params), timeout=3600
        )
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    single = results.get("single")
    base_part = None if single is None else single[0]["step rss"] - single[0]["before rss"]
    print(
        f"\nper-rank host memory (MB, max over ranks), {args.layers} layers x hidden {args.hidden}"
        f"{', blocks recomputed' if args.recompute else ''}: "
        f"model state part = RSS after the first step - RSS before the model was built"
    )
    print(
        f"{'layout':<15}{'ranks':>6}{'init peak':>11}{'step peak':>11}{'save peak':>11}{'state part':>12}"
        f"{'single/N':>10}{'rest':>8}{'planned':>9}"
    )
    rows = []
    for name in names:
        ranks, parallel = LAYOUTS[name]
        per_rank = results[name]
        part = max(r["step rss"] - r["before rss"] for r in per_rank)
        peaks = [max(r[f"{phase} peak"] for r in per_rank) for phase in ("init", "step", "save")]
        share = None if base_part is None else base_part / ranks
        planned = planned_state_mb(vars(args), ranks, parallel)
        rest = "" if share is None else f"{part - share:.0f}"
        print(
            f"{name:<15}{ranks:>6}{peaks[0]:>11.0f}{peaks[1]:>11.0f}{peaks[2]:>11.0f}{part:>12.0f}"
            f"{'' if share is None else f'{share:.0f}':>10}{rest:>8}{planned:>9.0f}",
            flush=True,
        )
        if share is not None and ranks > 1:
            rows.append(
                {
                    "figure": f"model-state memory per rank, {name} ({ranks} ranks)"
                    + (", recompute" if args.recompute else ""),
                    "ours": part,
                    "reference": share,
                    "reference_name": "one process's / N",
                    "unit": "MB",
                    "better": "lower",
                }
            )
    mg_bench("mg-train/bench_memory_ranks", *(tuple(row.values()) for row in rows))


if __name__ == "__main__":
    main()
