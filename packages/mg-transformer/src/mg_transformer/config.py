"""`TransformerConfig`: every size and switch of the Movie Gen transformer in one dataclass, with presets."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mg_transformer._atomic import write_text
from mg_transformer.attention import BACKENDS

TEXT_ENCODERS = ("ul2", "byt5", "metaclip")
"""Encoder names the contract allows (docs/contracts.md section 1)."""

REAL_TEXT_DIMS = {"ul2": 4096, "byt5": 1472, "metaclip": 1280}
"""Embedding widths of the real encoders: UL2 encoder, ByT5-small, Long-prompt MetaCLIP."""


@dataclass
class TransformerConfig:
    """Sizes and switches of `MovieGenTransformer`; saved as `config.json` next to the weights.

    Text conditioning: `text_dims` maps each configured encoder (any subset of "ul2", "byt5", "metaclip") to
    its embedding width, and its order is the order in which the model's forward takes the encoders' embeddings
    and masks. `pos_embed_max_size` is the (t, h, w) size of the learnable position tables in patches: inputs may
    use any grid up to it. `attention_backend` picks the attention core ("auto" = fused flash attention on
    Ascend, chunked online-softmax attention elsewhere); `attention_chunk_size` and `attention_key_chunk_size`
    are the chunked core's query and key block lengths. `pos_embed_every_layer` adds the factorised position
    embedding at the start of every block, as the reference implementation does; False (the default) adds it
    once before the first block, as DiT-style models do (see the package README for why).
    """

    num_layers: int = 24
    hidden_size: int = 1536
    ffn_size: int = 4096
    num_heads: int = 16
    in_channels: int = 16
    out_channels: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_dims: dict[str, int] = field(default_factory=lambda: dict(REAL_TEXT_DIMS))
    pos_embed_max_size: tuple[int, int, int] = (32, 73, 73)
    qk_norm: bool = False
    norm_eps: float = 1e-5
    timestep_embed_dim: int = 256
    timestep_scale: float = 1000.0
    init_std: float = 0.02
    attention_backend: str = "auto"
    attention_chunk_size: int = 2048
    attention_key_chunk_size: int = 4096
    pos_embed_every_layer: bool = False

    def __post_init__(self) -> None:
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.pos_embed_max_size = tuple(int(p) for p in self.pos_embed_max_size)
        self.text_dims = {str(name): int(dim) for name, dim in self.text_dims.items()}
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first inconsistent field."""

        def fail(name: str, expected: str) -> None:
            raise ValueError(f"TransformerConfig.{name}={getattr(self, name)!r}: expected {expected}")

        for name in ("num_layers", "hidden_size", "ffn_size", "num_heads", "in_channels", "out_channels"):
            if int(getattr(self, name)) < 1:
                fail(name, "a positive integer")
        if self.hidden_size % self.num_heads:
            fail("hidden_size", f"a multiple of num_heads={self.num_heads}")
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            fail("patch_size", "three positive integers (t, h, w)")
        if len(self.pos_embed_max_size) != 3 or min(self.pos_embed_max_size) < 1:
            fail("pos_embed_max_size", "three positive integers (t, h, w) in patches")
        if not self.text_dims:
            fail("text_dims", "at least one text encoder")
        unknown = [name for name in self.text_dims if name not in TEXT_ENCODERS]
        if unknown or min(self.text_dims.values()) < 1:
            fail("text_dims", f"positive widths for encoders among {TEXT_ENCODERS}")
        if self.timestep_embed_dim < 2 or self.timestep_embed_dim % 2:
            fail("timestep_embed_dim", "an even integer >= 2")
        if self.attention_backend not in BACKENDS:
            fail("attention_backend", f"one of {BACKENDS}")
        if self.attention_chunk_size < 1:
            fail("attention_chunk_size", "a positive integer")
        if self.attention_key_chunk_size < 1:
            fail("attention_key_chunk_size", "a positive integer")

    @property
    def text_encoders(self) -> tuple[str, ...]:
        """Configured encoder names in forward-argument order."""
        return tuple(self.text_dims)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_features(self) -> int:
        """Length of one flattened input patch: in_channels * pt * ph * pw."""
        pt, ph, pw = self.patch_size
        return self.in_channels * pt * ph * pw

    def patch_grid(self, latent_thw: tuple[int, int, int]) -> tuple[int, int, int]:
        """(t, h, w) patches of a latent grid; raises ValueError when a side does not divide by its patch."""
        grid = []
        for size, patch, axis in zip(latent_thw, self.patch_size, "THW", strict=True):
            if size < 1 or size % patch:
                raise ValueError(f"latent {axis}={size} is not a positive multiple of the patch size {patch}")
            grid.append(size // patch)
        return tuple(grid)

    def num_patches(self, latent_thw: tuple[int, int, int]) -> int:
        """Tokens of one sample: the product of `patch_grid`."""
        t, h, w = self.patch_grid(latent_thw)
        return t * h * w

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TransformerConfig:
        """A named size ("tiny", "1B", "5B", "30B") with any field overridden, e.g. `text_dims=...`."""
        if name not in PRESETS:
            raise ValueError(f"unknown transformer preset {name!r}; choose one of {sorted(PRESETS)}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown TransformerConfig field(s) {unknown}; fields are {sorted(fields)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["patch_size"] = list(self.patch_size)
        data["pos_embed_max_size"] = list(self.pos_embed_max_size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TransformerConfig:
        """Build from a dict (e.g. a parsed config.json); unknown keys raise and name `source`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(
                f"{source}: unknown TransformerConfig key(s) {unknown}; expected keys from {sorted(fields)}"
            )
        return cls(**data)

    def to_json(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> TransformerConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object of TransformerConfig fields")
        return cls.from_dict(data, source=str(path))


PRESETS: dict[str, dict[str, Any]] = {
    # Seconds on CPU: what tests and the CPU quickstart use. Small text widths so tiny text encoders plug in.
    "tiny": dict(
        num_layers=2,
        hidden_size=64,
        ffn_size=176,
        num_heads=4,
        text_dims={"ul2": 64, "byt5": 32, "metaclip": 48},
        pos_embed_max_size=(16, 32, 32),
    ),
    # Movie Gen sizes (anchor spec section 2.1); PE tables as in the reference's newest init: (32, 73, 73).
    "1B": dict(num_layers=24, hidden_size=1536, ffn_size=4096, num_heads=16),
    "5B": dict(num_layers=32, hidden_size=3072, ffn_size=8192, num_heads=24),
    "30B": dict(num_layers=48, hidden_size=6144, ffn_size=16384, num_heads=48),
}


def count_parameters(config: TransformerConfig) -> int:
    """Number of parameters of `MovieGenTransformer(config)`, computed from the sizes without building it."""
    hidden, ffn = config.hidden_size, config.ffn_size
    patch = config.patch_features
    out_patch = config.out_channels * config.patch_size[0] * config.patch_size[1] * config.patch_size[2]
    attention = 4 * hidden * hidden + (2 * config.head_dim if config.qk_norm else 0)
    block = (
        hidden  # norm1
        + attention  # self-attention
        + attention  # cross-attention
        + hidden  # norm2
        + 3 * hidden * ffn  # SwiGLU gate, up, down
        + 6 * hidden  # per-layer modulation table
    )
    return (
        patch * hidden  # patch embedding
        + sum(config.pos_embed_max_size) * hidden  # factorised position tables
        + config.timestep_embed_dim * hidden
        + hidden * hidden  # timestep MLP
        + hidden * 6 * hidden  # shared adaLN modulation
        + sum(dim * hidden + hidden for dim in config.text_dims.values())  # text projections and their norms
        + config.num_layers * block
        + 2 * hidden  # final modulation table
        + hidden  # final norm
        + hidden * out_patch  # final projection
    )
