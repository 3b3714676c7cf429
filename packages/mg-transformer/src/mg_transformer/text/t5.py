"""T5 encoder (UL2, ByT5) in MindSpore, loading Hugging Face `T5EncoderModel` / `T5ForConditionalGeneration` folders.

Pre-norm blocks with T5's RMS layer norm, unscaled dot-product attention with a learned bidirectional relative
position bias (computed in the first layer, shared by all layers), and a ReLU or gated feed-forward as
`feed_forward_proj` says ("relu", "gated-gelu" = tanh-approximate GELU as in Hugging Face, "gated-silu" for UL2).
"""

from __future__ import annotations

import math
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
from mg_transformer.text.layers import MASK_BIAS, Embedding, RMSNorm, activation, attention


@dataclass
class T5EncoderConfig:
    """The encoder half of a Hugging Face `T5Config` (same field names and defaults)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"
    pad_token_id: int = 0
    eos_token_id: int = 1

    def __post_init__(self) -> None:
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(
                f"feed_forward_proj {self.feed_forward_proj!r}: expected 'ACT' or 'gated-ACT' (e.g. relu, gated-gelu)"
            )
        activation(self.activation)  # fail early on unknown names

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        """The Hugging Face activation name; "gated-gelu" means the tanh approximation (HF's `gelu_new`)."""
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else self.feed_forward_proj.split("-")[-1]

    @classmethod
    def from_hf(cls, config: dict, source: str = CONFIG) -> T5EncoderConfig:
        """Read a Hugging Face T5 `config.json` dict; `source` names it in errors."""
        model_type = config.get("model_type", "t5")
        if model_type == "umt5":
            raise ValueError(
                f"{source}: model_type 'umt5' (a relative position bias per layer) is not supported"
            )
        if model_type not in ("t5", "mt5"):
            raise ValueError(f"{source}: model_type {model_type!r} is not a T5 model (expected 't5')")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.items() if k in known and v is not None}
        if isinstance(values.get("eos_token_id"), list):
            values["eos_token_id"] = values["eos_token_id"][0]
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err

    def to_hf(self) -> dict:
        """A `config.json` dict that `transformers.T5EncoderModel` reads."""
        return {
            **asdict(self),
            "model_type": "t5",
            "architectures": ["T5EncoderModel"],
            "is_encoder_decoder": False,
            "num_decoder_layers": self.num_layers,
            "dense_act_fn": self.activation,
            "is_gated_act": self.is_gated,
        }


def relative_position_bucket_table(num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of each distance 0..max_distance in one direction of T5's bidirectional scheme (int32).

    Half the buckets of a direction count exact distances, the rest grow logarithmically up to `max_distance`;
    the logarithm is taken in float32 like the reference so that bucket edges agree exactly.
    """
    half = num_buckets // 2
    max_exact = half // 2
    distance = np.arange(max_distance + 1)
    scaled = (
        np.log(np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact))
        / np.float32(math.log(max_distance / max_exact))
        * np.float32(half - max_exact)
    )
    large = np.minimum(max_exact + scaled.astype(np.int64), half - 1)
    return np.where(distance < max_exact, distance, large).astype(np.int32)


def relative_position_buckets(length: int, num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
    """(length, length) bucket ids for query i and key j of an encoder (numpy twin of the in-cell computation)."""
    table = relative_position_bucket_table(num_buckets, max_distance)
    pos = np.arange(length)
    relative = pos[None, :] - pos[:, None]
    return table[np.minimum(np.abs(relative), max_distance)] + (relative > 0) * (num_buckets // 2)


class T5Attention(nn.Cell):
    """Multi-head self-attention without scaling (T5 folds it into the initialisation) and without biases."""

    def __init__(self, config: T5EncoderConfig, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        self.heads, self.head_dim = config.num_heads, config.d_kv
        inner = config.num_heads * config.d_kv
        self.q = mint.nn.Linear(config.d_model, inner, bias=False, weight_init="zeros", dtype=dtype)
        self.k = mint.nn.Linear(config.d_model, inner, bias=False, weight_init="zeros", dtype=dtype)
        self.v = mint.nn.Linear(config.d_model, inner, bias=False, weight_init="zeros", dtype=dtype)
        self.o = mint.nn.Linear(inner, config.d_model, bias=False, weight_init="zeros", dtype=dtype)

    def construct(self, x: ms.Tensor, bias: ms.Tensor) -> ms.Tensor:
        b, s, _ = x.shape
        q = self.q(x).reshape(b, s, self.heads, self.head_dim).swapaxes(1, 2)
        k = self.k(x).reshape(b, s, self.heads, self.head_dim).swapaxes(1, 2)
        v = self.v(x).reshape(b, s, self.heads, self.head_dim).swapaxes(1, 2)
        out = attention(q, k, v, bias)
        return self.o(out.swapaxes(1, 2).reshape(b, s, self.heads * self.head_dim))


class T5FeedForward(nn.Cell):
    """wo(act(wi x)), or wo(act(wi_0 x) * wi_1 x) for the gated variants; no biases."""

    def __init__(self, config: T5EncoderConfig, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        self.gated = config.is_gated
        d, ff = config.d_model, config.d_ff
        if self.gated:
            self.wi_0 = mint.nn.Linear(d, ff, bias=False, weight_init="zeros", dtype=dtype)
            self.wi_1 = mint.nn.Linear(d, ff, bias=False, weight_init="zeros", dtype=dtype)
        else:
            self.wi = mint.nn.Linear(d, ff, bias=False, weight_init="zeros", dtype=dtype)
        self.wo = mint.nn.Linear(ff, d, bias=False, weight_init="zeros", dtype=dtype)
        self.act = activation(config.activation)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        if self.gated:
            return self.wo(self.act(self.wi_0(x)) * self.wi_1(x))
        return self.wo(self.act(self.wi(x)))


class T5Block(nn.Cell):
    """x + attn(norm(x)), then + ff(norm(x))."""

    def __init__(self, config: T5EncoderConfig, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.layer_norm_epsilon, dtype)
        self.attn = T5Attention(config, dtype)
        self.ff_norm = RMSNorm(config.d_model, config.layer_norm_epsilon, dtype)
        self.ff = T5FeedForward(config, dtype)

    def construct(self, x: ms.Tensor, bias: ms.Tensor) -> ms.Tensor:
        x = x + self.attn(self.attn_norm(x), bias)
        return x + self.ff(self.ff_norm(x))


class T5Encoder(nn.Cell):
    """The T5 encoder stack: `encoder(input_ids (B, L) int32, attention_mask (B, L) 1 = real)` -> (B, L, d_model).

    Padded positions are masked as keys, so the outputs at real positions do not depend on how much padding
    follows. Parameters are created as zeros; load weights with `from_pretrained` or `init_weights`.
    """

    def __init__(self, config: T5EncoderConfig, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = Embedding(config.vocab_size, config.d_model, dtype)
        self.relative_attention_bias = Embedding(
            config.relative_attention_num_buckets, config.num_heads, dtype
        )
        self.blocks = nn.CellList([T5Block(config, dtype) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(config.d_model, config.layer_norm_epsilon, dtype)
        table = relative_position_bucket_table(
            config.relative_attention_num_buckets, config.relative_attention_max_distance
        )
        self.bucket_table = ms.Tensor(table)
        self.max_distance = config.relative_attention_max_distance
        self.half_buckets = config.relative_attention_num_buckets // 2
        self.set_train(False)

    def position_bias(self, length: int) -> ms.Tensor:
        """(1, heads, length, length) learned bias for query i attending to key j."""
        pos = ops.arange(length, dtype=ms.int32)
        relative = pos[None, :] - pos[:, None]
        distance = ops.minimum(ops.abs(relative), self.max_distance)
        buckets = (
            ops.gather(self.bucket_table, distance, 0) + (relative > 0).astype(ms.int32) * self.half_buckets
        )
        return self.relative_attention_bias(buckets).transpose(2, 0, 1)[None]

    def construct(self, input_ids: ms.Tensor, attention_mask: ms.Tensor | None = None) -> ms.Tensor:
        x = self.embed_tokens(input_ids)
        bias = self.position_bias(input_ids.shape[1]).astype(ms.float32)
        if attention_mask is not None:
            keep = attention_mask.astype(ms.float32)[:, None, None, :]
            bias = bias + (1.0 - keep) * MASK_BIAS
        for block in self.blocks:
            x = block(x, bias)
        return self.final_norm(x)

    # --- Hugging Face weights -----------------------------------------------------------------------------

    def hf_names(self) -> dict[str, str]:
        """Parameter path -> Hugging Face checkpoint key."""
        names = {
            "embed_tokens.weight": "shared.weight",
            "relative_attention_bias.weight": "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "final_norm.weight": "encoder.final_layer_norm.weight",
        }
        ff = ("wi_0", "wi_1", "wo") if self.config.is_gated else ("wi", "wo")
        for i in range(self.config.num_layers):
            hf = f"encoder.block.{i}.layer."
            names[f"blocks.{i}.attn_norm.weight"] = hf + "0.layer_norm.weight"
            for w in "qkvo":
                names[f"blocks.{i}.attn.{w}.weight"] = hf + f"0.SelfAttention.{w}.weight"
            names[f"blocks.{i}.ff_norm.weight"] = hf + "1.layer_norm.weight"
            for w in ff:
                names[f"blocks.{i}.ff.{w}.weight"] = hf + f"1.DenseReluDense.{w}.weight"
        return names

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, dtype: ms.Type = ms.float32, strict: bool = True
    ) -> T5Encoder:
        """Build from a Hugging Face folder (`config.json` + safetensors); a decoder or LM head in it is skipped."""
        config = T5EncoderConfig.from_hf(read_config(folder), source=str(os.path.join(folder, CONFIG)))
        model = cls(config, dtype)
        weights = HFWeights(folder)
        names = model.hf_names()
        if "shared.weight" not in weights and "encoder.embed_tokens.weight" in weights:
            names["embed_tokens.weight"] = "encoder.embed_tokens.weight"
        load_weights_into(
            model,
            weights,
            names,
            owned_prefixes=("encoder.", "shared."),
            ignored=("encoder.embed_tokens.weight",),  # tied to shared.weight
            strict=strict,
        )
        return model

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write `config.json` + `model.safetensors` in the layout of `transformers.T5EncoderModel`."""
        save_hf_folder(self, self.hf_names(), folder, self.config.to_hf())

    def init_weights(self, seed: int | Sequence[int]) -> T5Encoder:
        """Random weights, deterministic by seed, with T5's scales (unit-variance embeddings, 1/sqrt(fan) else)."""
        rng = np.random.default_rng(seed)
        c = self.config
        std = {  # by the attribute that owns the weight
            "embed_tokens": 1.0,
            "relative_attention_bias": c.d_model**-0.5,
            "q": (c.d_model * c.d_kv) ** -0.5,
            "k": c.d_model**-0.5,
            "v": c.d_model**-0.5,
            "o": (c.num_heads * c.d_kv) ** -0.5,
            "wi": c.d_model**-0.5,
            "wi_0": c.d_model**-0.5,
            "wi_1": c.d_model**-0.5,
            "wo": c.d_ff**-0.5,
        }
        for name, param in self.parameters_and_names():
            owner = name.split(".")[-2]
            if owner.endswith("norm"):
                continue  # stays at one
            values = rng.standard_normal(param.shape, dtype=np.float32) * np.float32(std[owner])
            param.set_data(ms.Tensor(values, dtype=param.dtype))
        return self
