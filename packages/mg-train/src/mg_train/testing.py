"""Helpers for tests of mg-train and of packages built on it (mg-demo): a tiny random pipeline in seconds."""

from __future__ import annotations

from mg_tae import TAEConfig, TemporalAutoencoder
from mg_train.pipeline import MovieGenPipeline, PipelineInfo
from mg_transformer import MovieGenTransformer, TransformerConfig
from mg_transformer.text import TextEmbedder

TINY_TEXT = {"encoders": {"ul2": "tiny", "byt5": "tiny", "metaclip": "tiny"}, "seed": 0, "max_lengths": {}}


def tiny_random_pipeline(
    seed: int = 0,
    frames: int = 16,
    size: tuple[int, int] = (64, 64),
    jit: bool = False,
    **transformer_overrides,
) -> MovieGenPipeline:
    """Untrained tiny transformer + tiny TAE + tiny text encoders: real shapes and code paths, random output."""
    text = TextEmbedder(TINY_TEXT["encoders"], seed=TINY_TEXT["seed"])
    config = TransformerConfig.preset("tiny", text_dims=dict(text.dims), **transformer_overrides)
    transformer = MovieGenTransformer(config)
    transformer.init_weights(seed)
    tae = TemporalAutoencoder(TAEConfig.tiny(), seed=seed)
    info = PipelineInfo(
        fps=8.0,
        frames=frames,
        size=size,
        text=dict(TINY_TEXT),
        example_prompts=["a red circle moving left", "a blue square moving up"],
    )
    return MovieGenPipeline(transformer, tae, text, info, jit=jit)
