"""The Movie Gen side of the layout planner: what the transformer's parallel plan sends, computes and keeps.

mg-parallel's `planner` knows the costs of its styles and of ZeRO; this module walks the transformer as
`parallel_plan.transformer_plan` cuts it (the same plan a run applies) and adds them up for one micro-batch of
`Workload` on one rank: parameters (from the real model's names and shapes, built lazily), collectives (per
style, with the activation bytes each style sees), matmul FLOPs and activation memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mg_parallel as mp
from mg_parallel import planner
from mg_parallel.planner import Layout, ParamSpec, StepTraffic, Traffic
from mg_train.parallel_plan import sequence_axes, transformer_plan
from mg_transformer import MovieGenTransformer, TransformerConfig

ENGINE_SCALARS = 2  # per step: the loss mean and the stop-request flag, 4-byte all-reduces over all ranks


@dataclass(frozen=True)
class Workload:
    """One micro-batch on one data-parallel rank: samples, latent tokens per sample, text tokens per sample
    (all encoders), micro-batches per optimizer step and the bytes of one activation element."""

    batch: int
    tokens: int
    text_tokens: int
    micro_batches: int = 1
    activation_bytes: int = 4
    name: str = ""


class _Degrees:
    """Stands in for a ParallelContext where only the degrees matter (building a plan)."""

    def __init__(self, **degrees: int):
        self.degrees = degrees

    def size(self, axes) -> int:
        names = (axes,) if isinstance(axes, str) else tuple(axes)
        return math.prod(self.degrees.get(a, 1) for a in names)


def parameter_specs(config: TransformerConfig, itemsize: int = 4) -> list[ParamSpec]:
    """Every parameter of the model in `trainable_params` order, with the dim tensor parallel cuts: the
    column-parallel (dim 0) and row-parallel (dim 1) weights of `transformer_plan`."""
    model = MovieGenTransformer.lazy(config)
    cut: dict[str, int] = {}
    for pattern, styles in transformer_plan(_Degrees(tp=2), config).items():
        for style in styles if isinstance(styles, list) else [styles]:
            dim = (
                0
                if isinstance(style, mp.ColwiseParallel)
                else 1
                if isinstance(style, mp.RowwiseParallel)
                else None
            )
            if dim is None:
                continue
            for path in mp.match_paths(model, pattern):
                cut[f"{path}.weight"] = dim
    return [
        ParamSpec(name, tuple(p.shape), cut.get(name), bool(p.requires_grad), itemsize)
        for name, p in model.parameters_and_names()
    ]


def micro_batch_traffic(
    config: TransformerConfig,
    layout: Layout,
    work: Workload,
    params: list[ParamSpec],
    tp_sequence_parallel: bool = True,
) -> Traffic:
    """The collectives of one micro-batch on one rank: sequence split/gather, tensor parallel, Ulysses and
    context parallel in every block, and ZeRO-3's parameter gathers."""
    t = StepTraffic(layout)
    b, s, text, hidden, e = (
        work.batch,
        work.tokens,
        work.text_tokens,
        config.hidden_size,
        work.activation_bytes,
    )
    tp, cp, sp = layout.tp, layout.cp, layout.sp
    seq = sequence_axes(_Degrees(tp=tp, cp=cp, sp=sp), tp_sequence_parallel)
    shards = layout.degree(seq)
    x_local = b * (s // shards) * hidden * e  # between the blocks
    attention_tokens = b * (s // (cp * sp))  # rows of the attention projections (full over tp)
    heads_bytes = attention_tokens * (hidden // tp) * e  # q, k or v of this rank entering the core
    tp_seq = tp_sequence_parallel and tp > 1
    if shards > 1:
        t.split_sequence(seq, x_local)
        if config.pos_embed_every_layer:  # the (1, S, hidden) position embedding, split at every block
            t.split_sequence(seq, (s // shards) * hidden * e, count=config.num_layers)
        t.gather_sequence(seq, x_local, recomputed=True)  # wrapped into the last block: recomputed with it
    by_block: dict[int, list[ParamSpec]] = {}
    for p in params:
        if p.name.startswith("blocks."):
            by_block.setdefault(int(p.name.split(".")[1]), []).append(p)
    for index in range(config.num_layers):
        if tp > 1:
            out_bytes = attention_tokens * hidden * e
            for _ in ("q", "k", "v"):
                t.column_parallel(x_local, tp_seq, recomputed=True)
            t.row_parallel(out_bytes, tp_seq, recomputed=True)
            t.column_parallel(x_local, tp_seq, recomputed=True)  # cross-attention q
            for _ in ("k", "v"):  # over the replicated text: its gradient is all-reduced
                t.column_parallel(b * text * hidden * e, False, recomputed=True)
            t.row_parallel(out_bytes, tp_seq, recomputed=True)
            for _ in ("gate", "up"):
                t.column_parallel(x_local, tp_seq, recomputed=True)
            t.row_parallel(out_bytes, tp_seq, recomputed=True)
        if sp > 1:
            t.ulysses(heads_bytes, heads_bytes, heads_bytes, recomputed=True)
        if cp > 1:
            kv = b * (s // cp) * (hidden // (tp * sp)) * e  # after Ulysses: heads / (tp sp), sequence / cp
            t.context_parallel(kv, kv, recomputed=True)
        for p in by_block.get(index, []):
            t.zero_read(p, recomputed=True)
    for p in params:
        if not p.name.startswith("blocks."):
            t.zero_read(p)
    return t.micro_batch()


def step_traffic(
    config: TransformerConfig,
    layout: Layout,
    work: Workload,
    params: list[ParamSpec],
    tp_sequence_parallel: bool = True,
) -> Traffic:
    """One optimizer step on one rank: the micro-batches, ZeroOptimizer's step and the engine's scalars."""
    total = Traffic()
    total.merge(micro_batch_traffic(config, layout, work, params, tp_sequence_parallel), work.micro_batches)
    total.merge(planner.optimizer_traffic(params, layout))
    # the engine's scalars, and its stop check before every micro-batch after the first
    total.add("all_reduce", planner.group_key(layout, mp.AXES), 4, ENGINE_SCALARS + work.micro_batches - 1)
    return total


# -- activations --------------------------------------------------------------------------------------------------
# Elements a block keeps for its backward pass, per token, measured on MindSpore PyNative (CPU, float32) as the
# first step's peak difference between two batch sizes and two depths (H=256, F=704, 4 heads; see
# benchmarks/bench_plan_memory.py, which checks the model on other shapes and layouts):
#  - per block, 13.7 x hidden per latent token, of which ~6 x hidden at the width between blocks (norms,
#    modulation, gated residuals; sharded over the sequence axes) and the rest in the attention projections
#    (rows b*S/(cp*sp), columns hidden/tp); 4.9 x ffn per token in the SwiGLU (ffn/tp); 5.6 x hidden per text token
#    (cross-attention keys/values, hidden/tp);
#  - the sequence-parallel variant of TP keeps each column layer's gathered input: 6 x hidden per attention row;
#  - outside the blocks (patchify, embeddings, final layer, loss, one block's backward in flight): 8.1 x hidden
#    per latent token of the rank's samples;
#  - with recomputation a block keeps its input only, and one block's activations exist while it is recomputed;
#  - parallel layouts add what mg-parallel's mappings keep (counted per mapping in `_one_block_elements`; a
#    mapping with a custom backward keeps its input and output in PyNative), and on CPU the full-size buffers of
#    collectives emulated with all-reduces; the sequence split and the final gather keep full-sequence tensors.
BLOCK_BETWEEN = 6.0
BLOCK_ATTENTION = 7.7
BLOCK_FFN = 4.9
BLOCK_TEXT = 5.6
TP_SP_GATHERED = 6.0
EMULATED_TP_SP = 9.0  # CPU: the 6 gathers' zero-padded inputs and the 3 reduce-scatters' full sums
OUTSIDE = 8.1


@dataclass(frozen=True)
class ActivationBytes:
    """Activation memory of one micro-batch on one rank: what the blocks keep for backward, what exists
    outside them (including one block's backward in flight) and the attention core's workspace."""

    blocks: int
    outside: int
    attention_workspace: int

    @property
    def total(self) -> int:
        return self.blocks + self.outside + self.attention_workspace


def _one_block_elements(
    config: TransformerConfig, layout: Layout, work: Workload, tp_sequence_parallel: bool, emulated: bool
) -> tuple[float, float, float]:
    """Elements one block keeps for its backward pass, its input's elements, and the collectives' share of the
    first (the part that is also in flight while one block runs backward)."""
    b, s, hidden = work.batch, work.tokens, config.hidden_size
    tp, cp, sp = layout.tp, layout.cp, layout.sp
    seq = sequence_axes(_Degrees(tp=tp, cp=cp, sp=sp), tp_sequence_parallel)
    between = b * s / layout.degree(seq)
    rows = b * s / (cp * sp)
    text = b * work.text_tokens
    elements = (
        BLOCK_BETWEEN * between * hidden
        + BLOCK_ATTENTION * rows * hidden / tp
        + BLOCK_FFN * rows * config.ffn_size / tp
        + BLOCK_TEXT * text * hidden / tp
    )
    collectives = 0.0
    if tp > 1:
        # a mapping with a custom backward keeps its input and output: the row layers' partial sums (3), the
        # cross-attention's copies of the text for k and v (2) and, without the SP variant, the column layers'
        # copies of their input (6); with it, their gathered inputs (6)
        collectives += 3 * rows * hidden + 2 * text * hidden
        collectives += (TP_SP_GATHERED if tp_sequence_parallel else 6.0) * rows * hidden
        if emulated and tp_sequence_parallel:  # all-gathers and reduce-scatters built from all-reduces
            collectives += EMULATED_TP_SP * rows * hidden
    if emulated and sp > 1:  # the 4 all-to-alls of Ulysses (q, k, v in, attention out)
        collectives += 4 * rows * hidden / tp
    if emulated and cp > 1:  # the all-gathers of k and v over the full sequence
        collectives += 2 * b * s * hidden / (tp * sp)
    return elements + collectives, between * hidden, collectives


def activation_bytes(
    config: TransformerConfig,
    layout: Layout,
    work: Workload,
    tp_sequence_parallel: bool = True,
    emulated_collectives: bool = False,
) -> ActivationBytes:
    """Activation memory of one micro-batch under `layout` (see the constants above for what is counted).
    `emulated_collectives`: the device builds all-gather, reduce-scatter and all-to-all from all-reduces, whose
    full-size buffers the backward pass keeps (mg-parallel on CPU); native collectives (Ascend) do not."""
    e = work.activation_bytes
    block, block_input, collectives = _one_block_elements(
        config, layout, work, tp_sequence_parallel, emulated_collectives
    )
    if layout.recompute:
        blocks = config.num_layers * block_input + block
    else:
        blocks = config.num_layers * block
    full = work.batch * work.tokens * config.hidden_size
    outside = OUTSIDE * full + collectives  # one block's collective buffers while it runs backward
    seq = sequence_axes(_Degrees(tp=layout.tp, cp=layout.cp, sp=layout.sp), tp_sequence_parallel)
    if layout.degree(seq) > 1:  # the sequence split keeps its full input, the final gather its full output
        outside += 2 * full
    heads = config.num_heads // (layout.tp * layout.sp)
    queries = work.tokens // layout.cp
    workspace = 0
    if config.attention_backend != "flash":  # chunked: a few score blocks; flash keeps them on chip
        chunk_q = min(config.attention_chunk_size, queries)
        chunk_k = min(config.attention_key_chunk_size, work.tokens)
        workspace = 3 * work.batch * heads * chunk_q * chunk_k
    return ActivationBytes(int(blocks * e), int(outside * e), int(workspace * e))


# -- FLOPs -------------------------------------------------------------------------------------------------------


def step_flops(
    config: TransformerConfig, layout: Layout, work: Workload, patch_features: int, text_dims: dict[str, int]
) -> dict[str, float]:
    """Matmul FLOPs of one optimizer step on one rank (2 per multiply-add): forward, backward (2x forward) and
    the blocks' recomputation. `patch_features` is channels x patch volume; `text_dims` the encoders' widths
    (their tokens are split evenly). Every rank of a tensor/sequence group computes the text projections, the
    cross-attention keys/values of its heads and the patch embedding of its samples in full."""
    b, s, L, hidden, ffn = work.batch, work.tokens, work.text_tokens, config.hidden_size, config.ffn_size
    tp, cp, sp = layout.tp, layout.cp, layout.sp
    rows = b * s / (cp * sp)
    per_block = (
        8 * rows * hidden * hidden / tp  # self-attention q, k, v, out
        + 4 * b * (s / cp) * s * hidden / (tp * sp)  # scores and values over the full key sequence
        + 4 * rows * hidden * hidden / tp  # cross-attention q, out
        + 4 * b * L * hidden * hidden / tp  # cross-attention k, v over the text
        + 4 * rows * L * hidden / tp  # cross-attention scores and values
        + 6 * rows * hidden * ffn / tp  # SwiGLU
    )
    outside = 2 * b * s * patch_features * hidden * 2  # patch embedding, output projection
    outside += sum(2 * b * (L / max(len(text_dims), 1)) * dim * hidden for dim in text_dims.values())
    blocks = config.num_layers * per_block
    forward = (blocks + outside) * work.micro_batches
    return {
        "forward": forward,
        "backward": 2 * forward,
        "recompute": blocks * work.micro_batches if layout.recompute else 0.0,
    }
