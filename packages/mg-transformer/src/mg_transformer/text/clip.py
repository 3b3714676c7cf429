"""CLIP text encoder (MetaCLIP) in MindSpore, loading Hugging Face `CLIPTextModel(WithProjection)` / `CLIPModel`.

Token + learned absolute position embeddings (as many positions as the config allows, e.g. 256 for a
long-prompt MetaCLIP instead of OpenAI's 77), pre-norm blocks with causal self-attention, a final layer norm.
Outputs per-token states and the pooled state of the last real token (the EOS the tokenizer appends), and,
when the checkpoint has one, the projection of the pooled state into the joint image-text space.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import mindspore as ms
import numpy as np
from mindspore import mint, nn, ops

from mg_transformer.text.hf_io import (
    CONFIG,
    HFWeights,
    load_weights_into,
    read_config,
    save_hf_folder,
)
from mg_transformer.text.layers import MASK_BIAS, Embedding, LayerNorm, activation, attention

# Hugging Face model types with CLIP's text tower and weight names (MetaCLIP 2 reuses CLIP's modules).
_TEXT_MODEL_TYPES = ("clip_text_model", "metaclip_2_text_model")
_FULL_MODEL_TYPES = ("clip", "metaclip_2")


@dataclass
class CLIPTextConfig:
    """A Hugging Face `CLIPTextConfig` (same field names and defaults) plus whether a text projection exists."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 512
    with_projection: bool = False
    pad_token_id: int = 1
    bos_token_id: int = 49406
    eos_token_id: int = 49407

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        activation(self.hidden_act)  # fail early on unknown names

    @classmethod
    def from_hf(cls, config: dict, source: str = CONFIG) -> CLIPTextConfig:
        """Read a `clip_text_model` config, or the `text_config` of a full `clip` config; `source` names it in errors."""
        model_type = config.get("model_type")
        architectures = config.get("architectures") or []
        with_projection = any(
            a.endswith(("TextModelWithProjection", "Clip2Model", "CLIPModel")) for a in architectures
        )
        projection_dim = config.get("projection_dim")
        if model_type in _FULL_MODEL_TYPES:
            if not isinstance(config.get("text_config"), dict):
                raise ValueError(f"{source}: a {model_type!r} config needs a 'text_config' object")
            config = config["text_config"]
            with_projection = True
        elif model_type not in _TEXT_MODEL_TYPES:
            raise ValueError(
                f"{source}: model_type {model_type!r} is not a CLIP text model "
                f"(expected one of {', '.join(_TEXT_MODEL_TYPES + _FULL_MODEL_TYPES)})"
            )
        known = {f.name for f in fields(cls)} - {"with_projection"}
        values = {k: v for k, v in config.items() if k in known and v is not None}
        if projection_dim is not None:
            values["projection_dim"] = projection_dim
        try:
            return cls(**values, with_projection=with_projection)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err

    def to_hf(self) -> dict:
        """A `config.json` dict that `transformers.CLIPTextModel(WithProjection)` reads."""
        values = asdict(self)
        values.pop("with_projection")
        architecture = "CLIPTextModelWithProjection" if self.with_projection else "CLIPTextModel"
        return {**values, "model_type": "clip_text_model", "architectures": [architecture]}


def block_hf_names(hf_prefix: str, num_layers: int) -> dict[str, str]:
    """`blocks.N...` parameter paths of `CLIPBlock`s -> their keys under `hf_prefix` (CLIP's encoder layers,
    the same in the text and the vision tower)."""
    names = {}
    for i in range(num_layers):
        for ours, theirs in (
            ("norm1", "layer_norm1"),
            ("norm2", "layer_norm2"),
            ("attn.q_proj", "self_attn.q_proj"),
            ("attn.k_proj", "self_attn.k_proj"),
            ("attn.v_proj", "self_attn.v_proj"),
            ("attn.out_proj", "self_attn.out_proj"),
            ("mlp.fc1", "mlp.fc1"),
            ("mlp.fc2", "mlp.fc2"),
        ):
            for p in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{p}"] = f"{hf_prefix}.{i}.{theirs}.{p}"
    return names


def load_clip_tower(cls, config_class, folder: str | os.PathLike, tower: str, dtype: ms.Type, strict: bool):
    """`cls` (a CLIP text or vision tower cell) built from `config_class.from_hf` of a Hugging Face folder and
    loaded with its weights; `tower` is "text" or "vision" (keys `<tower>_model.*`, and `text_projection` /
    `visual_projection` when the checkpoint has one). Keys of the other tower are skipped."""
    prefix = f"{tower}_model."
    projection = "text_projection.weight" if tower == "text" else "visual_projection.weight"
    config = config_class.from_hf(read_config(folder), source=str(os.path.join(folder, CONFIG)))
    weights = HFWeights(folder)
    if config.with_projection and projection not in weights:
        config.with_projection = False  # e.g. a CLIPModel config saved with only this tower
    model = cls(config, dtype)
    load_weights_into(
        model,
        weights,
        model.hf_names(),
        owned_prefixes=(prefix, projection.rsplit(".", 1)[0] + "."),
        ignored=(f"{prefix}embeddings.position_ids",),  # a buffer older checkpoints saved
        strict=strict,
    )
    return model


class CLIPAttention(nn.Cell):
    """Multi-head attention with biased q/k/v/out projections and 1/sqrt(head_dim) scaling."""

    def __init__(self, config: CLIPTextConfig, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        d = config.hidden_size
        self.heads, self.head_dim = config.num_attention_heads, d // config.num_attention_heads
        self.scale = self.head_dim**-0.5
        self.q_proj = mint.nn.Linear(d, d, weight_init="zeros", bias_init="zeros", dtype=dtype)
        self.k_proj = mint.nn.Linear(d, d, weight_init="zeros", bias_init="zeros", dtype=dtype)
        self.v_proj = mint.nn.Linear(d, d, weight_init="zeros", bias_init="zeros", dtype=dtype)
        self.out_proj = mint.nn.Linear(d, d, weight_init="zeros", bias_init="zeros", dtype=dtype)

    def construct(self, x: ms.Tensor, bias: ms.Tensor) -> ms.Tensor:
        b, s, d = x.shape
        q = (self.q_proj(x) * self.scale).reshape(b, s, self.heads, self.head_dim).swapaxes(1, 2)
        k = self.k_proj(x).reshape(b, s, self.heads, self.head_dim).swapaxes(1, 2)
        v = self.v_proj(x).reshape(b, s, self.heads, self.head_dim).swapaxes(1, 2)
        out = attention(q, k, v, bias)
        return self.out_proj(out.swapaxes(1, 2).reshape(b, s, d))


class CLIPMLP(nn.Cell):
    """fc2(act(fc1 x))."""

    def __init__(self, config: CLIPTextConfig, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        d, ff = config.hidden_size, config.intermediate_size
        self.fc1 = mint.nn.Linear(d, ff, weight_init="zeros", bias_init="zeros", dtype=dtype)
        self.fc2 = mint.nn.Linear(ff, d, weight_init="zeros", bias_init="zeros", dtype=dtype)
        self.act = activation(config.hidden_act)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPBlock(nn.Cell):
    """x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, config: CLIPTextConfig, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        self.norm1 = LayerNorm(config.hidden_size, config.layer_norm_eps, dtype)
        self.attn = CLIPAttention(config, dtype)
        self.norm2 = LayerNorm(config.hidden_size, config.layer_norm_eps, dtype)
        self.mlp = CLIPMLP(config, dtype)

    def construct(self, x: ms.Tensor, bias: ms.Tensor) -> ms.Tensor:
        x = x + self.attn(self.norm1(x), bias)
        return x + self.mlp(self.norm2(x))


class CLIPTextEncoder(nn.Cell):
    """`encoder(input_ids (B, L) int32, attention_mask (B, L) 1 = real)` -> (states (B, L, D), pooled (B, D)).

    Attention is causal and ignores padded keys; `pooled` is the final state of the last real token
    (position `mask.sum() - 1`, or L - 1 without a mask). `project(pooled)` gives the text embedding of
    checkpoints with a projection. Parameters are created as zeros; load with `from_pretrained` or `init_weights`.
    """

    def __init__(self, config: CLIPTextConfig, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = Embedding(config.vocab_size, config.hidden_size, dtype)
        self.position_embedding = Embedding(config.max_position_embeddings, config.hidden_size, dtype)
        self.blocks = nn.CellList([CLIPBlock(config, dtype) for _ in range(config.num_hidden_layers)])
        self.final_norm = LayerNorm(config.hidden_size, config.layer_norm_eps, dtype)
        if config.with_projection:
            self.text_projection = mint.nn.Linear(
                config.hidden_size, config.projection_dim, bias=False, weight_init="zeros", dtype=dtype
            )
        self.set_train(False)

    def construct(
        self, input_ids: ms.Tensor, attention_mask: ms.Tensor | None = None
    ) -> tuple[ms.Tensor, ms.Tensor]:
        b, s = input_ids.shape
        if s > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {s} exceeds max_position_embeddings {self.config.max_position_embeddings}"
            )
        pos = ops.arange(s, dtype=ms.int32)
        x = self.token_embedding(input_ids) + self.position_embedding(pos)[None]
        causal = (pos[None, :] > pos[:, None]).astype(ms.float32) * MASK_BIAS  # key after query: blocked
        bias = causal[None, None]
        if attention_mask is not None:
            keep = attention_mask.astype(ms.float32)
            bias = bias + (1.0 - keep)[:, None, None, :] * MASK_BIAS
            last = keep.sum(-1).astype(ms.int32) - 1
        else:
            last = ops.full((b,), s - 1, dtype=ms.int32)
        for block in self.blocks:
            x = block(x, bias)
        x = self.final_norm(x)
        pick = ops.one_hot(last, s, ops.ones((), x.dtype), ops.zeros((), x.dtype))  # (B, L)
        pooled = ops.matmul(pick[:, None, :], x)[:, 0]
        return x, pooled

    def project(self, pooled: ms.Tensor) -> ms.Tensor:
        """The projected text embedding (B, projection_dim) of checkpoints with a `text_projection`."""
        if not self.config.with_projection:
            raise ValueError("this CLIP text model has no text_projection (config.with_projection is False)")
        return self.text_projection(pooled)

    # --- Hugging Face weights -----------------------------------------------------------------------------

    def hf_names(self) -> dict[str, str]:
        """Parameter path -> Hugging Face checkpoint key."""
        names = {
            "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
            "position_embedding.weight": "text_model.embeddings.position_embedding.weight",
            "final_norm.weight": "text_model.final_layer_norm.weight",
            "final_norm.bias": "text_model.final_layer_norm.bias",
        }
        names.update(block_hf_names("text_model.encoder.layers", self.config.num_hidden_layers))
        if self.config.with_projection:
            names["text_projection.weight"] = "text_projection.weight"
        return names

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, dtype: ms.Type = ms.float32, strict: bool = True
    ) -> CLIPTextEncoder:
        """Build from a Hugging Face folder (`config.json` + safetensors); a vision tower in it is skipped."""
        return load_clip_tower(cls, CLIPTextConfig, folder, "text", dtype, strict)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write `config.json` + `model.safetensors` in the layout of `transformers.CLIPTextModel(WithProjection)`."""
        save_hf_folder(self, self.hf_names(), folder, self.config.to_hf())

    def init_weights(self, seed: int | Sequence[int]) -> CLIPTextEncoder:
        """Random weights, deterministic by seed: unit-variance tokens, 0.2-std positions, 1/sqrt(fan_in) linears.

        Token embeddings are larger than CLIP's own initialisation so that a random model keeps prompts apart.
        """
        rng = np.random.default_rng(seed)
        for name, param in self.parameters_and_names():
            owner, kind = name.split(".")[-2:]
            if "norm" in owner:
                continue  # weight one, bias zero
            if owner == "token_embedding":
                std = 1.0
            elif owner == "position_embedding":
                std = 0.2
            elif kind == "bias":
                std = 0.02
            else:
                std = param.shape[1] ** -0.5
            values = rng.standard_normal(param.shape, dtype=np.float32) * np.float32(std)
            param.set_data(ms.Tensor(values, dtype=param.dtype))
        return self
