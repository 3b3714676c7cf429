"""The TAE's configuration: one dataclass whose defaults are the SD3.5 VAE sizes inflated to 2.5D."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mg_tae._atomic import write_text

BACKENDS = ("auto", "matmul", "matmul_autograd", "native")


@dataclass
class TAEConfig:
    """Sizes and constants of a Temporal Autoencoder.

    Defaults are the SD3.5 VAE (diffusers `AutoencoderKL`: 128 base channels, multipliers 1, 2, 4, 4, 2 res blocks
    per encoder level and 3 per decoder level, 16 latent channels, GroupNorm 32, mid-block attention, scaling
    1.5305 and shift 0.0609) with Movie Gen's temporal layers: a 3-tap temporal conv after every spatial conv,
    temporal downsampling after the spatial downsampling of encoder levels 0-2 and temporal upsampling in the
    decoder's first three up blocks (the mirror levels), and temporal attention after the spatial mid attention.
    """

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 16
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    mid_block_add_attention: bool = True
    # Encoder levels (diffusers `down_blocks` index) followed by a stride-2 temporal conv.
    temporal_downsample_levels: tuple[int, ...] = (0, 1, 2)
    # Decoder up blocks (diffusers `up_blocks` index, 0 = lowest resolution) followed by temporal upsampling.
    temporal_upsample_levels: tuple[int, ...] = (0, 1, 2)
    # GroupNorm statistics per frame (True: a frame is normalised on its own, so results do not depend on clip
    # length or temporal tiling) or over the whole clip (False: the reference implementation's 5D GroupNorm).
    norm_per_frame: bool = True
    scaling_factor: float = 1.5305
    shift_factor: float = 0.0609
    # "matmul_autograd": convs as matmuls over a padded row layout (fast on CPU), differentiated by autograd;
    # "matmul": the same forward with hand-written backward passes (same step time, more memory, slower compile);
    # "native": MindSpore convolutions (use on Ascend); "auto": native on Ascend, matmul_autograd elsewhere.
    conv_backend: str = "auto"
    # A parameter-free shortcut (mg_tae.shortcut, DC-AE's residual autoencoding): block means of the pixels are
    # added to the latent means and read back by the decoder, so flat colours pass from the first training step.
    # Not part of SD3.5 / Movie Gen (False for their weights); for TAEs trained from scratch (the quickstart).
    pixel_shortcut: bool = False
    # Time parts P of the shortcut: each latent cell carries P means of 8/P consecutive frames, decoded linearly
    # in time, so motion inside a latent frame survives; None: as many as the latent channels hold (16 latent
    # channels, RGB: 4). 1 is the mg-tae <= 0.3 shortcut (one mean repeated over 8 frames, which cannot move).
    pixel_shortcut_time_parts: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        self.temporal_downsample_levels = tuple(int(i) for i in self.temporal_downsample_levels)
        self.temporal_upsample_levels = tuple(int(i) for i in self.temporal_upsample_levels)
        self.validate()

    @classmethod
    def tiny(cls, **overrides: Any) -> TAEConfig:
        """A small TAE with the full 2.5D structure and 8x compression in T, H and W, for tests and CPU runs."""
        values: dict[str, Any] = dict(
            block_out_channels=(16, 32, 32, 64),
            layers_per_block=1,
            norm_num_groups=4,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def spatial_compression(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def temporal_compression(self) -> int:
        return 2 ** len(self.temporal_downsample_levels)

    @property
    def shortcut_time_parts(self) -> int:
        """The pixel shortcut's time parts: the configured number, else the largest power of two that divides
        the temporal compression and fits in_channels times into the latent channels."""
        if self.pixel_shortcut_time_parts is not None:
            return int(self.pixel_shortcut_time_parts)
        parts = 1
        while (
            self.temporal_compression % (2 * parts) == 0
            and 2 * parts * self.in_channels <= self.latent_channels
        ):
            parts *= 2
        return parts

    def validate(self) -> None:
        """Raise ValueError naming the field when the configuration cannot build a model."""
        levels = len(self.block_out_channels)
        if levels < 1 or any(c <= 0 for c in self.block_out_channels):
            raise ValueError(
                f"TAEConfig.block_out_channels must be positive ints, got {self.block_out_channels}"
            )
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise ValueError(
                    f"TAEConfig.norm_num_groups={self.norm_num_groups} must divide every block_out_channels "
                    f"entry, got {self.block_out_channels}"
                )
        for name in ("in_channels", "out_channels", "latent_channels", "layers_per_block", "norm_num_groups"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"TAEConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("temporal_downsample_levels", "temporal_upsample_levels"):
            value = getattr(self, name)
            if len(set(value)) != len(value) or any(not 0 <= i < levels - 1 for i in value):
                raise ValueError(
                    f"TAEConfig.{name} must hold distinct levels in [0, {levels - 1}) (levels with a spatial "
                    f"resampler), got {value}"
                )
        if len(self.temporal_downsample_levels) != len(self.temporal_upsample_levels):
            raise ValueError(
                "TAEConfig.temporal_downsample_levels and temporal_upsample_levels must have the same length "
                f"(same temporal compression), got {self.temporal_downsample_levels} and "
                f"{self.temporal_upsample_levels}"
            )
        if self.pixel_shortcut and (
            self.in_channels != self.out_channels or self.latent_channels < self.in_channels
        ):
            raise ValueError(
                "TAEConfig.pixel_shortcut needs in_channels == out_channels <= latent_channels, got "
                f"{self.in_channels}, {self.out_channels} and {self.latent_channels}"
            )
        parts = self.pixel_shortcut_time_parts
        if parts is not None and (
            int(parts) < 1
            or self.temporal_compression % int(parts)
            or (self.pixel_shortcut and int(parts) * self.in_channels > self.latent_channels)
        ):
            raise ValueError(
                f"TAEConfig.pixel_shortcut_time_parts must be a positive divisor of the temporal compression "
                f"{self.temporal_compression} with parts x in_channels <= latent_channels={self.latent_channels}, "
                f"got {parts}"
            )
        if self.conv_backend not in BACKENDS:
            raise ValueError(f"TAEConfig.conv_backend must be one of {BACKENDS}, got {self.conv_backend!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["block_out_channels"] = list(self.block_out_channels)
        data["temporal_downsample_levels"] = list(self.temporal_downsample_levels)
        data["temporal_upsample_levels"] = list(self.temporal_upsample_levels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown TAEConfig fields {unknown}; expected a subset of {sorted(known)}"
            )
        if data.get("pixel_shortcut") and "pixel_shortcut_time_parts" not in data:
            data = {**data, "pixel_shortcut_time_parts": 1}  # saved by mg-tae <= 0.3: its one-part shortcut
        return cls(**data)

    def save(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TAEConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of TAEConfig fields")
        return cls.from_dict(data, source=str(path))
