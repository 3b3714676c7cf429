"""How the Movie Gen transformer is parallelised: the plan (data) and the one function that applies it.

Data parallel and ZeRO-1/2/3 need nothing from the model (the optimizer wrapper in `engine.build_optimizer`
handles them). Ulysses sequence parallel uses the transformer's seams (docs/contracts.md 5): the token sequence
is split before `blocks.0`, gathered after `blocks.-1`, and every self-attention core trades sequence shards for
head shards with an all-to-all. Cross-attention attends from local queries to the full (replicated) text, so it
needs no style. Everything else (patchify, position tables, timestep and text embeddings, final layer) runs on
the full sequence, identically on every rank of a sequence-parallel group.
"""

from __future__ import annotations

import mg_parallel as mp
from mg_transformer import MovieGenTransformer, TransformerConfig


def transformer_plan(ctx: mp.ParallelContext) -> dict[str, mp.ParallelStyle]:
    """The plan for `ctx`'s sequence-parallel degree; empty without sequence parallelism."""
    if ctx.size("sp") == 1:
        return {}
    return {
        "blocks.0": mp.SequenceShardInput(),  # x (B, S, hidden) -> (B, S / sp, hidden)
        "blocks.-1": mp.SequenceGatherOutput(),  # and back after the last block
        "blocks.*.attn.core": mp.UlyssesAttention(),  # q, k, v: sequence shards <-> head shards
    }


def check_sequence_parallel(config: TransformerConfig, sp: int, tokens: int | None = None) -> None:
    """Raise ValueError when `sp` cannot split this model (heads) or a sequence of `tokens` latent tokens."""
    if sp < 1:
        raise ValueError(f"parallel.sp must be at least 1, got {sp}")
    if config.num_heads % sp:
        raise ValueError(
            f"parallel.sp={sp} does not divide the transformer's {config.num_heads} attention heads "
            "(Ulysses gives each rank heads / sp heads); choose an sp that divides the head count"
        )
    if tokens is not None and tokens % sp:
        raise ValueError(
            f"parallel.sp={sp} does not divide a sequence of {tokens} latent tokens; choose frames and sizes "
            "whose token count (latent frames x (height / 16) x (width / 16)) divides by sp"
        )


def parallelize_transformer(model: MovieGenTransformer, ctx: mp.ParallelContext) -> MovieGenTransformer:
    """Apply the sequence-parallel plan to `model` in place (a no-op in one process or without sp).

    Replicas must start equal: every rank builds the model from the same seed or checkpoint, which
    `MovieGenTransformer.init_weights(seed)` and `from_pretrained` guarantee. Parameter names do not change, so
    checkpoints of a parallel run are those of the plain model.
    """
    check_sequence_parallel(model.config, ctx.size("sp"))
    plan = transformer_plan(ctx)
    if plan:
        mp.parallelize(model, plan, ctx)
    return model
