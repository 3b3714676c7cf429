"""How the Movie Gen transformer is parallelised: the plan (data) and the one function that applies it.

Layout `dp x cp x sp x tp` (mg-parallel's groups: tp innermost, then sp, cp, dp). What each axis does to the
transformer (docs/contracts.md 5 lists the seams):

- Sequence (cp, sp, and tp's sequence-parallel variant): the token sequence is split before `blocks.0` and
  gathered after `blocks.-1` over all sequence axes; with `pos_embed_every_layer` every block also gets its
  shard of the position embedding (argument 4).
- Ulysses (sp): every self-attention core trades sequence shards for head shards with an all-to-all.
- Context parallel (cp): every self-attention core attends from its local queries to K and V all-gathered
  over the cp group (their gradients reduce-scattered), Movie Gen's CP.
- Tensor parallel (tp, Megatron): in self- and cross-attention q/k/v are column-parallel (heads split over tp)
  and the output projection row-parallel; in the SwiGLU MLP gate/up are column- and down row-parallel. With
  `tp_sequence_parallel` (the default) the activations between those layers (norms, residuals, modulation)
  are split along the sequence over tp too (Megatron-SP: the column layers all-gather, the row layers
  reduce-scatter), which divides that activation memory by tp at the same communication volume. Cross-attention
  K/V read the replicated text, so they gather nothing.
- Replicated on every rank of a model-parallel group (their gradients averaged over their replica ranks):
  patch embedding, position tables, timestep MLP and the shared adaLN projection, every block's
  `scale_shift_table`, norm weights, the text projections and the final layer. They run on tensors every rank
  has anyway (the timestep embedding, the text). The largest is the shared adaLN projection (hidden x 6 hidden:
  226M parameters at 30B, 0.8% of the model), then the text projections (6.8k x hidden, 42M at 30B); ZeRO
  shards their optimizer state (and, at stages 2-3, gradients and weights) over their replica group.
- Data parallel and ZeRO-1/2/3 need nothing from the model: the optimizer wrapper (`optim.build_optimizer`)
  shards optimizer state / gradients / parameters over each parameter's replica group (dp x cp x sp for
  replicated parameters, the non-tp ranks for tensor-parallel shards).
"""

from __future__ import annotations

import math

import mg_parallel as mp
from mg_transformer import MovieGenTransformer, TransformerConfig


def sequence_axes(ctx: mp.ParallelContext, tp_sequence_parallel: bool) -> tuple[str, ...]:
    """The axes the token sequence is split over between the blocks (shard index tp-innermost)."""
    axes = [axis for axis in ("cp", "sp") if ctx.size(axis) > 1]
    if ctx.size("tp") > 1 and tp_sequence_parallel:
        axes.append("tp")
    return tuple(axes)


def transformer_plan(
    ctx: mp.ParallelContext, config: TransformerConfig, tp_sequence_parallel: bool = True
) -> dict[str, mp.ParallelStyle | list[mp.ParallelStyle]]:
    """The plan for `ctx`'s layout; empty in one process or with data parallelism only."""
    plan: dict[str, mp.ParallelStyle | list[mp.ParallelStyle]] = {}
    seq = sequence_axes(ctx, tp_sequence_parallel)
    if seq:
        plan["blocks.0"] = mp.SequenceShardInput(axes=seq)  # x (B, S, hidden) -> (B, S / n, hidden)
        plan["blocks.-1"] = mp.SequenceGatherOutput(axes=seq)  # and back after the last block
        if config.pos_embed_every_layer:
            plan["blocks.*"] = mp.SequenceShardInput({4: 1}, axes=seq)
    if ctx.size("tp") > 1:
        tp_seq = tp_sequence_parallel
        for attn in ("attn", "cross_attn"):
            plan[f"blocks.*.{attn}.to_q"] = mp.ColwiseParallel(sequence_parallel=tp_seq)
            for name in ("to_k", "to_v"):  # cross-attention reads the replicated text: nothing to gather
                plan[f"blocks.*.{attn}.{name}"] = mp.ColwiseParallel(
                    sequence_parallel=tp_seq and attn == "attn"
                )
            plan[f"blocks.*.{attn}.to_out"] = mp.RowwiseParallel(sequence_parallel=tp_seq)
        plan["blocks.*.mlp.gate_proj"] = mp.ColwiseParallel(sequence_parallel=tp_seq)
        plan["blocks.*.mlp.up_proj"] = mp.ColwiseParallel(sequence_parallel=tp_seq)
        plan["blocks.*.mlp.down_proj"] = mp.RowwiseParallel(sequence_parallel=tp_seq)
    cores: list[mp.ParallelStyle] = []
    if ctx.size("cp") > 1:
        cores.append(mp.ContextParallelAttention())
    if ctx.size("sp") > 1:
        cores.append(mp.UlyssesAttention())  # outermost: all-to-all, then CP's K/V gather
    if cores:
        plan["blocks.*.attn.core"] = cores
    return plan


def check_layout(
    config: TransformerConfig,
    degrees: dict[str, int],
    tokens: int | None = None,
    tp_sequence_parallel: bool = True,
) -> None:
    """Raise ValueError naming the field and the numbers when `degrees` (dp, cp, sp, tp) cannot split this
    model, or a sequence of `tokens` latent tokens."""
    tp, sp, cp = degrees.get("tp", 1), degrees.get("sp", 1), degrees.get("cp", 1)
    for axis in ("tp", "sp", "cp"):
        if degrees.get(axis, 1) < 1:
            raise ValueError(f"parallel.{axis} must be at least 1, got {degrees[axis]}")
    if config.num_heads % (tp * sp):
        raise ValueError(
            f"parallel.tp={tp} x parallel.sp={sp} = {tp * sp} does not divide the transformer's "
            f"{config.num_heads} attention heads (tensor parallel and Ulysses each split the heads); choose "
            "degrees whose product divides the head count"
        )
    for name, width in (("hidden_size", config.hidden_size), ("ffn_size", config.ffn_size)):
        if width % tp:
            raise ValueError(f"parallel.tp={tp} does not divide the transformer's {name} {width}")
    if tokens is not None:
        shards = cp * sp * (tp if tp_sequence_parallel else 1)
        if tokens % shards:
            parts = f"parallel.cp={cp} x parallel.sp={sp}" + (
                f" x parallel.tp={tp} (tp_sequence_parallel)" if tp_sequence_parallel and tp > 1 else ""
            )
            raise ValueError(
                f"{parts} = {shards} does not divide a sequence of {tokens} latent tokens; choose frames and "
                "sizes whose token count (latent frames x (height / 16) x (width / 16)) divides by it"
            )


def check_sequence_parallel(config: TransformerConfig, sp: int, tokens: int | None = None) -> None:
    """`check_layout` for a layout with Ulysses only (kept for callers that know sp alone)."""
    check_layout(config, {"sp": sp}, tokens)


def parallelize_transformer(
    model: MovieGenTransformer, ctx: mp.ParallelContext, tp_sequence_parallel: bool = True
) -> MovieGenTransformer:
    """Apply the plan for `ctx` to `model` in place (a no-op in one process or with data parallelism only).

    Replicas must start equal: every rank builds the model from the same seed or checkpoint, which
    `MovieGenTransformer.init_weights(seed)` and `from_pretrained` guarantee. Parameter names do not change, so
    checkpoints of a parallel run are those of the plain model.
    """
    degrees = {axis: ctx.size(axis) for axis in ("dp", "cp", "sp", "tp")}
    check_layout(model.config, degrees, tp_sequence_parallel=tp_sequence_parallel)
    plan = transformer_plan(ctx, model.config, tp_sequence_parallel)
    if plan:
        mp.parallelize(model, plan, ctx)
    return model


def world_size_of(degrees: dict[str, int]) -> int:
    return math.prod(degrees.get(axis, 1) for axis in ("dp", "cp", "sp", "tp"))
