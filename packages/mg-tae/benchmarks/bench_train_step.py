"""Tiny-TAE training step on CPU under `mindspore.jit`: hand-written conv backward vs autograd, side by side.

Times, in one process and interleaved rep by rep (so a busy machine slows both alike), the training forward
(`model(x, noise)` plus an L1 + KL-style loss) and forward + backward (`mindspore.value_and_grad` over every
parameter) of `TAEConfig.tiny()` on a 4x3x16x32x32 (B, C, T, H, W) clip for:

- `conv_backend="matmul"`: the default CPU path, matmul convs with hand-written backward passes;
- `conv_backend="matmul_autograd"`: the same forward differentiated by MindSpore's autograd (the plain path).

Both models share their weights; the script checks that their losses and gradients agree before timing.
`--baseline-src DIR` adds a third column: the default backend of another mg-tae source tree (e.g. an older
commit exported with `git archive <commit> packages/mg-tae/src | tar -x -C DIR`), run in a child process that
is compiled first and then called once per round, interleaved with the two variants above.

Usage: python packages/mg-tae/benchmarks/bench_train_step.py [--reps 5] [--shape 4x3x16x32x32]
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


def build_steps(backend: str, shape: tuple[int, ...], state: dict | None = None):
    """(model, fwd, fwd_bwd) jitted for one conv backend; weights from `state` when given."""
    import mindspore as ms
    import numpy as np
    from mindspore import Tensor

    from mg_tae import TAEConfig, TemporalAutoencoder

    model = TemporalAutoencoder(TAEConfig.tiny(conv_backend=backend), seed=0)
    rng = np.random.default_rng(1)
    if state is None:  # temporal layers off their identity init, so their gradients are exercised too
        for name, p in model.parameters_and_names():
            if ".temporal." in name or "temporal_" in name:
                value = p.asnumpy()
                p.set_data(Tensor((value + 0.1 * rng.standard_normal(value.shape)).astype(np.float32)))
    else:
        model.load_state_dict(state)
    x = Tensor(np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32))
    latent = (shape[0], *model.latent_shape(shape[2], shape[3], shape[4]))
    noise = Tensor(np.random.default_rng(2).standard_normal(latent).astype(np.float32))

    def loss_fn(inp, eps):
        recon, mean, logvar = model(inp, eps)
        kl = 0.5 * (mean * mean + logvar.exp() - 1.0 - logvar).mean()
        return (recon - inp).abs().mean() + 1e-6 * kl

    fwd = ms.jit(loss_fn)
    fwd_bwd = ms.jit(ms.value_and_grad(loss_fn, grad_position=None, weights=model.trainable_params()))
    return model, (lambda: fwd(x, noise).asnumpy()), (lambda: _sync(fwd_bwd(x, noise)))


def _sync(result):
    value, grads = result
    for g in grads:
        g.asnumpy()
    return value.asnumpy(), grads


def _first_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_interleaved(fns: dict, reps: int) -> dict:
    """Best and median wall time of each function (each returns its own elapsed seconds), calling them in turn
    for `reps` rounds."""
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(fn())
    return {name: {"best": min(t), "median": sorted(t)[len(t) // 2]} for name, t in times.items()}


def serve_baseline_child(shape: tuple[int, ...]) -> None:
    """Child process: build and compile the default backend of the mg-tae on PYTHONPATH, then time one call per
    request line ("fwd" or "step") from stdin, answering "@@ <seconds>" on stdout."""
    import mindspore as ms

    import mg_tae

    ms.set_context(pynative_synchronize=True)
    _, fwd, fwd_bwd = build_steps("auto", shape)
    compile_s = _first_call(fwd) + _first_call(fwd_bwd)
    print("@@ " + json.dumps({"compile": compile_s, "source": os.path.dirname(mg_tae.__file__)}), flush=True)
    for line in sys.stdin:
        fn = fwd if line.strip() == "fwd" else fwd_bwd
        print(f"@@ {_timed(fn)}", flush=True)


class BaselineProcess:
    """Another mg-tae source tree, timed in a child process call by call (so it interleaves with ours)."""

    def __init__(self, src: str, shape: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.path.abspath(src)}
        cmd = [sys.executable, __file__, "--child", "--shape", shape]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.info = json.loads(self._answer())

    def _answer(self) -> str:
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return line[3:]
        raise RuntimeError(f"baseline child exited with code {self.proc.wait()}")

    def timed(self, what: str) -> float:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return float(self._answer())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed rounds per variant (default 5)")
    parser.add_argument(
        "--shape", default="4x3x16x32x32", help="input B x C x T x H x W (default 4x3x16x32x32)"
    )
    parser.add_argument(
        "--baseline-src",
        default=None,
        help="another mg-tae src/ directory to time as a third column (optional)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    os.environ.setdefault("GLOG_v", "3")
    if args.child:
        serve_baseline_child(shape)
        return

    import mindspore as ms
    import numpy as np

    ms.set_context(pynative_synchronize=True)
    print(f"tiny TAE training step, input {args.shape}, mindspore.jit, fp32, {args.reps} interleaved rounds")
    fast_model, fast_fwd, fast_step = build_steps("matmul", shape)
    _, plain_fwd, plain_step = build_steps("matmul_autograd", shape, state=fast_model.state_dict())

    compile_s = {}
    results = {}
    for name, fn in (
        ("fast_fwd", fast_fwd),
        ("plain_fwd", plain_fwd),
        ("fast", fast_step),
        ("plain", plain_step),
    ):
        compile_s[name] = _first_call(fn)
        results[name] = fn() if name in ("fast", "plain") else None
    (v_fast, g_fast), (v_plain, g_plain) = results["fast"], results["plain"]
    scale = max(float(np.abs(g.asnumpy()).max()) for g in g_plain)
    grad_err = max(
        float(np.abs(a.asnumpy() - b.asnumpy()).max()) for a, b in zip(g_fast, g_plain, strict=True)
    )
    print(
        f"check: loss {float(v_fast):.6f} vs {float(v_plain):.6f}; max |grad difference| / max |grad| = "
        f"{grad_err / scale:.1e}"
    )
    print(
        "compile (first call) s: "
        + ", ".join(f"{k} {v:.1f}" for k, v in compile_s.items())
        + "  (fast/plain = hand-written/autograd)"
    )

    fns = {
        "fast_fwd": lambda: _timed(fast_fwd),
        "plain_fwd": lambda: _timed(plain_fwd),
        "fast": lambda: _timed(fast_step),
        "plain": lambda: _timed(plain_step),
    }
    baseline = BaselineProcess(args.baseline_src, args.shape) if args.baseline_src else None
    if baseline:  # compiled before timing starts; then one call of it per round, like ours
        fns.update(base_fwd=lambda: baseline.timed("fwd"), base=lambda: baseline.timed("step"))
    try:
        timed = time_interleaved(fns, args.reps)
    finally:
        if baseline:
            baseline.close()

    header = f"{'seconds (best / median)':26s} {'hand-written':>16s} {'autograd':>16s} {'autograd/hand':>14s}"
    if baseline:
        header += f" {'baseline src':>16s} {'baseline/hand':>14s}"
    print(header)
    rows = []
    for label, key in (("forward", "fwd"), ("forward + backward", "")):
        f, p = timed["fast" + (key and "_" + key)], timed["plain" + (key and "_" + key)]
        line = (
            f"{label:26s} {f['best']:7.3f} / {f['median']:6.3f} {p['best']:7.3f} / {p['median']:6.3f} "
            f"{p['median'] / f['median']:13.2f}x"
        )
        if baseline:
            b = timed["base" + (key and "_" + key)]
            line += f" {b['best']:7.3f} / {b['median']:6.3f} {b['median'] / f['median']:13.2f}x"
        print(line)
        rows.append((f"tiny TAE {label} (median)", f["median"], p["median"], "autograd", "s", "lower"))
        if baseline:
            rows.append(
                (f"tiny TAE {label} (median)", f["median"], b["median"], "baseline src", "s", "lower")
            )
    mg_bench("mg-tae/bench_train_step", *rows)
    if baseline:
        print(
            f"baseline: {baseline.info['source']} (its default backend; compile of fwd + step "
            f"{baseline.info['compile']:.1f} s), timed in a child process interleaved with ours"
        )


if __name__ == "__main__":
    main()
