"""Inflation of a diffusers-format 2D VAE (AutoencoderKL, e.g. SD3.5's) into a TAE checkpoint, by key names.

Every 2D conv `X.weight` of the VAE becomes the spatial half `X.spatial.weight` of our inflated conv (the temporal
half keeps its identity initialisation); resamplers, norms and the spatial mid attention keep their names; 1x1
attention convs of older checkpoints (`query`/`key`/`value`/`proj_attn`, 4D) are accepted and reshaped. Shapes are
checked one by one, and the report lists source keys that were not used and model keys left at their
initialisation (the temporal layers, by design).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from mg_tae.config import TAEConfig

# Names used by diffusers' legacy attention blocks, mapped to the current ones.
# The SD3.5 VAE's config.json fields (stabilityai/stable-diffusion-3.5-*/vae), as diffusers' AutoencoderKL arguments:
# the 2D VAE whose sizes TAEConfig's defaults inflate, and whose weights `inflate_state_dict` maps.
SD35_VAE_DIFFUSERS_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=16,
    norm_num_groups=32,
    sample_size=1024,
    scaling_factor=1.5305,
    shift_factor=0.0609,
    use_quant_conv=False,
    use_post_quant_conv=False,
    mid_block_add_attention=True,
)
LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

# Model keys that exist only in the TAE: left at their identity initialisation by inflation.
TEMPORAL_KEY = re.compile(r"\.temporal\.|temporal_downsampler|temporal_upsampler|temporal_attentions")


@dataclass
class InflationReport:
    """What `inflate_state_dict` did: source keys mapped, source keys unused, model keys kept at their init."""

    mapped: dict[str, str] = field(default_factory=dict)
    unused_source: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    temporal_initialised: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"mapped {len(self.mapped)} source tensors",
            f"{len(self.temporal_initialised)} temporal tensors keep their identity initialisation",
        ]
        if self.unused_source:
            lines.append(
                f"unexpected source keys ({len(self.unused_source)}): {', '.join(self.unused_source)}"
            )
        if self.missing:
            lines.append(f"missing non-temporal keys ({len(self.missing)}): {', '.join(self.missing)}")
        return "\n".join(lines)


def target_name(source_key: str) -> str:
    """Our parameter name for a diffusers AutoencoderKL key (no shape logic)."""
    key = source_key
    for old, new in LEGACY_ATTENTION.items():
        key = re.sub(rf"(\.attentions\.\d+)\.{old}\.", rf"\1.{new}.", key)
    parts = key.rsplit(".", 2)
    if len(parts) == 3:
        owner, leaf = parts[0] + "." + parts[1], parts[2]
        inflated = re.search(r"(conv_in|conv_out|conv1|conv2)$", owner)
        if inflated:
            return f"{owner}.spatial.{leaf}"
        if owner.endswith("conv_shortcut"):
            return key
    return key


def _fit(value: np.ndarray, shape: tuple[int, ...], key: str) -> np.ndarray:
    """Reshape legacy 1x1-conv attention weights to Linear; any other shape difference is an error."""
    if tuple(value.shape) == tuple(shape):
        return value
    if (
        value.size == int(np.prod(shape))
        and value.ndim == 4
        and len(shape) == 2
        and value.shape[2:] == (1, 1)
    ):
        return value.reshape(shape)
    raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit the TAE parameter shape {tuple(shape)}")


def inflate_state_dict(
    source: dict[str, np.ndarray], target_shapes: dict[str, tuple[int, ...]]
) -> tuple[dict[str, np.ndarray], InflationReport]:
    """Map a diffusers VAE state dict onto a TAE's parameter names; returns the mapped arrays and a report."""
    report = InflationReport()
    state: dict[str, np.ndarray] = {}
    for key in sorted(source):
        name = target_name(key)
        if name not in target_shapes:
            report.unused_source.append(key)
            continue
        state[name] = np.ascontiguousarray(
            _fit(np.asarray(source[key], np.float32), target_shapes[name], key)
        )
        report.mapped[key] = name
    for name in sorted(target_shapes):
        if name in state:
            continue
        if TEMPORAL_KEY.search(name):
            report.temporal_initialised.append(name)
        else:
            report.missing.append(name)
    return state, report


def inflate_from_diffusers(src, config: TAEConfig | None = None, strict: bool = True):
    """Build a TAE from a diffusers AutoencoderKL safetensors file (or state dict): returns (model, report).

    With strict=True, unused source keys or missing non-temporal keys raise ValueError naming them.
    """
    from mg_tae.model import TemporalAutoencoder

    if isinstance(src, (str, Path)):
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (expected diffusion_pytorch_model.safetensors)")
        try:
            source = load_file(str(path))
        except Exception as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
        label = str(path)
    else:
        source, label = dict(src), "source state dict"
    model = TemporalAutoencoder(config if config is not None else TAEConfig(), seed=0)
    shapes = {name: tuple(p.shape) for name, p in model.parameters_and_names()}
    state, report = inflate_state_dict(source, shapes)
    if strict and (report.unused_source or report.missing):
        raise ValueError(f"{label}: cannot inflate into the TAE config:\n{report.summary()}")
    _load_known(model, state)
    return model, report


def _load_known(model, state: dict[str, np.ndarray]) -> None:
    from mindspore import Tensor

    params = dict(model.parameters_and_names())
    for name, value in state.items():
        params[name].set_data(Tensor(value))
