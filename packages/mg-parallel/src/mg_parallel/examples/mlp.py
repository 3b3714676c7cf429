"""A small MLP trained with data parallel, tensor parallel and ZeRO, in one process or under msrun.

    python -m mg_parallel.examples.mlp --steps 5
    msrun --worker_num=2 --local_worker_num=2 ... python -m mg_parallel.examples.mlp --tp 2 --zero 2 --steps 5

Every step draws one global batch of 8 samples from a seeded generator and each data-parallel rank takes its
rows, so any layout computes the same losses and weights as one process (up to float32 rounding). Rank 0
prints one line per step and, at the end, `final loss <value> checksum <sum of |weights|>`.
"""

from __future__ import annotations

import argparse

import numpy as np

GLOBAL_BATCH, DIM, HIDDEN = 8, 16, 64


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tp", type=int, default=1, help="tensor-parallel degree (the rest is data parallel)"
    )
    parser.add_argument("--zero", type=int, default=0, choices=(0, 1, 2, 3), help="ZeRO stage")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)

    import mindspore as ms
    from mindspore import mint, nn

    import mg_parallel as mp

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ctx = mp.init_parallel(tp=args.tp)
    if GLOBAL_BATCH % ctx.data_world:
        parser.error(
            f"the global batch of {GLOBAL_BATCH} must divide by the data-parallel degree {ctx.data_world}"
        )
    ms.set_seed(0)
    model = nn.SequentialCell([mint.nn.Linear(DIM, HIDDEN), nn.GELU(), mint.nn.Linear(HIDDEN, DIM)])
    mp.parallelize(model, {"0": mp.ColwiseParallel(), "2": mp.RowwiseParallel()}, ctx)
    zero = mp.ZeroOptimizer(
        model,
        lambda params: nn.AdamWeightDecay(params, learning_rate=1e-2),
        stage=args.zero,
        ctx=ctx,
        clip_norm=1.0,
    )

    def loss_fn(x, y):
        return mint.mean(mint.square(model(x) - y))

    grad_fn = ms.value_and_grad(loss_fn, None, zero.params)
    rows = GLOBAL_BATCH // ctx.data_world
    loss = 0.0
    for step in range(args.steps):
        rng = np.random.default_rng([0, step])
        x = rng.standard_normal((GLOBAL_BATCH, DIM)).astype(np.float32)
        y = np.tanh(x[:, ::-1]).copy()
        mine = slice(ctx.data_rank * rows, (ctx.data_rank + 1) * rows)
        value, grads = grad_fn(ms.Tensor(x[mine]), ms.Tensor(y[mine]))
        zero(grads)
        loss = float(mp.all_reduce(value.reshape(1), ctx.world_group).asnumpy()[0]) / ctx.world_size
        if ctx.rank_id == 0:
            print(f"step {step + 1}/{args.steps} loss {loss:.6f}", flush=True)
    state = mp.gather_full_state(model, ctx)
    if ctx.rank_id == 0:
        checksum = sum(float(np.abs(v).sum()) for v in state.values())
        print(
            f"world {ctx.world_size} (dp {ctx.data_world}, tp {args.tp}), ZeRO {args.zero}: "
            f"final loss {loss:.6f} checksum {checksum:.6f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
