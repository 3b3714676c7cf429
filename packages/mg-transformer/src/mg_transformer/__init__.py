"""The Movie Gen Video transformer and its rectified-flow training objective and sampler.

Main names: `TransformerConfig` (sizes, presets "tiny"/"1B"/"5B"/"30B"), `MovieGenTransformer` (the model),
`count_parameters`, `RectifiedFlowLoss` / `rectified_flow_loss` (training), `sample` (Euler sampler with
classifier-free guidance), `linear_quadratic_schedule`, and the attention cores in `mg_transformer.attention`.
Time convention: t in [0, 1], t = 1 is pure noise; the model predicts v = x0 - (1 - sigma_min) * noise.
"""

from mg_transformer.__about__ import __version__
from mg_transformer.attention import ChunkedAttention, FlashAttention, PlainAttention, make_attention_core
from mg_transformer.config import PRESETS, TransformerConfig, count_parameters
from mg_transformer.model import MovieGenTransformer
from mg_transformer.pretrained import load_state_dict, resize_position_table
from mg_transformer.rectified_flow import (
    SIGMA_MIN,
    RectifiedFlowLoss,
    drop_text,
    interpolate,
    linear_quadratic_schedule,
    linear_schedule,
    make_schedule,
    rectified_flow_loss,
    sample,
    sample_timesteps,
    velocity_target,
)

__all__ = [
    "PRESETS",
    "SIGMA_MIN",
    "ChunkedAttention",
    "FlashAttention",
    "MovieGenTransformer",
    "PlainAttention",
    "RectifiedFlowLoss",
    "TransformerConfig",
    "__version__",
    "count_parameters",
    "drop_text",
    "interpolate",
    "linear_quadratic_schedule",
    "linear_schedule",
    "load_state_dict",
    "make_attention_core",
    "make_schedule",
    "rectified_flow_loss",
    "resize_position_table",
    "sample",
    "sample_timesteps",
    "velocity_target",
]
