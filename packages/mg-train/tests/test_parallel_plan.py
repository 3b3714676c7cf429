"""The transformer's parallel plan as data: which sub-cells get which style for a layout, and the layout checks
that fail before any work (names and numbers in the message). Multi-process equivalence: test_parallel_transformer."""

from __future__ import annotations

import pytest

import mg_parallel as mp
from mg_train.config.loader import ConfigError
from mg_train.config.schema import ParallelConfig
from mg_train.parallel_plan import check_layout, transformer_plan
from mg_transformer import MovieGenTransformer, TransformerConfig

CONFIG = TransformerConfig.preset("tiny", num_layers=2, hidden_size=32, ffn_size=64, num_heads=4)


def context(world: int, **degrees: int) -> mp.ParallelContext:
    """A context for rank 0 of a layout (no communication: the plan only reads the degrees)."""
    return mp.ParallelContext(
        layout=mp.ParallelLayout.for_world(world, **degrees), rank_id=0, world_size=world
    )


def styles(plan: dict) -> dict[str, list[str]]:
    return {key: [type(s).__name__ for s in (v if isinstance(v, list) else [v])] for key, v in plan.items()}


def test_one_process_and_data_parallel_need_no_plan():
    assert transformer_plan(context(1), CONFIG) == {}
    assert transformer_plan(context(4, dp=4), CONFIG) == {}


def test_tensor_parallel_splits_attention_and_mlp_and_the_sequence_between_them():
    plan = styles(transformer_plan(context(2, tp=2), CONFIG))
    for attn in ("attn", "cross_attn"):
        for name in ("to_q", "to_k", "to_v"):
            assert plan[f"blocks.*.{attn}.{name}"] == ["ColwiseParallel"]
        assert plan[f"blocks.*.{attn}.to_out"] == ["RowwiseParallel"]
    assert plan["blocks.*.mlp.gate_proj"] == plan["blocks.*.mlp.up_proj"] == ["ColwiseParallel"]
    assert plan["blocks.*.mlp.down_proj"] == ["RowwiseParallel"]
    assert plan["blocks.0"] == ["SequenceShardInput"] and plan["blocks.-1"] == ["SequenceGatherOutput"]
    raw = transformer_plan(context(2, tp=2), CONFIG)
    assert raw["blocks.0"].axes == ("tp",)
    assert (
        raw["blocks.*.attn.to_k"].sequence_parallel and not raw["blocks.*.cross_attn.to_k"].sequence_parallel
    )
    plain = transformer_plan(context(2, tp=2), CONFIG, tp_sequence_parallel=False)
    assert "blocks.0" not in plain and not plain["blocks.*.mlp.down_proj"].sequence_parallel


def test_context_and_ulysses_wrap_self_attention_only_ulysses_outermost():
    plan = transformer_plan(context(8, cp=2, sp=2, tp=2), CONFIG)
    assert styles(plan)["blocks.*.attn.core"] == ["ContextParallelAttention", "UlyssesAttention"]
    assert "blocks.*.cross_attn.core" not in plan
    assert plan["blocks.0"].axes == ("cp", "sp", "tp")  # the shard order of mg-parallel's groups
    every = TransformerConfig.preset("tiny", num_heads=4, pos_embed_every_layer=True)
    assert transformer_plan(context(2, sp=2), every)["blocks.*"].arg_dims == {4: 1}


def test_the_plan_matches_every_path_of_the_model():
    model = MovieGenTransformer(CONFIG)
    for pattern in transformer_plan(context(8, cp=2, sp=2, tp=2), CONFIG):
        assert mp.match_paths(model, pattern), pattern


@pytest.mark.parametrize(
    ("degrees", "tokens", "message"),
    [
        (
            {"tp": 2, "sp": 4},
            None,
            r"parallel.tp=2 x parallel.sp=4 = 8 does not divide the transformer's 4 attention heads",
        ),
        ({"tp": 3}, None, "parallel.tp=3 x parallel.sp=1 = 3 does not divide"),
        (
            {"cp": 2, "sp": 2},
            30,
            r"parallel.cp=2 x parallel.sp=2 = 4 does not divide a sequence of 30 latent tokens",
        ),
        (
            {"cp": 2, "tp": 2},
            10,
            r"x parallel.tp=2 \(tp_sequence_parallel\) = 4 does not divide a sequence of 10",
        ),
    ],
)
def test_layouts_that_cannot_split_the_model_are_refused(degrees, tokens, message):
    with pytest.raises(ValueError, match=message):
        check_layout(CONFIG, degrees, tokens)


def test_the_mlp_width_must_divide_by_tp():
    with pytest.raises(ValueError, match=r"parallel.tp=4 does not divide the transformer's ffn_size 66"):
        check_layout(TransformerConfig.preset("tiny", hidden_size=32, ffn_size=66, num_heads=4), {"tp": 4})


def test_degrees_follow_the_world_size_or_say_why_not():
    assert ParallelConfig(tp=2, sp=2).degrees(8) == {"dp": 2, "cp": 1, "sp": 2, "tp": 2}
    assert ParallelConfig(dp=2, cp=2).degrees(4) == {"dp": 2, "cp": 2, "sp": 1, "tp": 1}
    with pytest.raises(
        ConfigError,
        match=r"parallel.dp=2 x parallel.tp=2 x parallel.cp=1 x parallel.sp=1 = 4 processes, but this job has 8",
    ):
        ParallelConfig(dp=2, tp=2).degrees(8)
    with pytest.raises(
        ConfigError, match=r"= 4 must divide the world size; this job has 1 process\(es\) \(launch"
    ):
        ParallelConfig(tp=2, cp=2).degrees(1)
