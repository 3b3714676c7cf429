"""The Movie Gen Video transformer: a Llama-style diffusion transformer over (t, h, w) patches of video latents.

One forward pass: patchify the latents (B, C, T, H, W) into tokens, add factorised learnable (t, h, w) position
embeddings once, run the blocks (adaLN-modulated self-attention, cross-attention to the projected text tokens,
adaLN-modulated SwiGLU MLP), then a modulated final norm and projection back to patches and to (B, C, T, H, W).
Images are videos with one latent frame. Every attention layer calls its `core(q, k, v, mask)` cell (BNSD),
which parallel wrappers may replace; the token sequence runs through the `blocks` CellList (docs/contracts.md 5).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn

from mg_transformer.attention import make_attention_core
from mg_transformer.config import TransformerConfig
from mg_transformer.linear import Linear


class RMSNorm(nn.Cell):
    """Root-mean-square norm over the last axis, computed in float32, with a learnable gain."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(Tensor(np.ones(dim, np.float32)), name="weight")

    def construct(self, x: Tensor) -> Tensor:
        x32 = x.astype(ms.float32)
        normed = x32 * mint.rsqrt(mint.mean(mint.square(x32), -1, True) + self.eps)
        return (normed * self.weight).astype(x.dtype)


class Attention(nn.Cell):
    """Multi-head attention (self, or cross when `context` is given) around a replaceable `core` cell.

    Projections `to_q`, `to_k`, `to_v`, `to_out` are bias-free `Linear`s (`mint.nn.Linear` subclasses; tensor-parallel styles address
    them by path). Heads are inferred from the projection width, so a column-sharded `to_q` works unchanged.
    """

    def __init__(self, hidden_size: int, num_heads: int, qk_norm: bool, eps: float, core: nn.Cell):
        super().__init__()
        self.head_dim = hidden_size // num_heads
        self.to_q = Linear(hidden_size, hidden_size, bias=False)
        self.to_k = Linear(hidden_size, hidden_size, bias=False)
        self.to_v = Linear(hidden_size, hidden_size, bias=False)
        self.to_out = Linear(hidden_size, hidden_size, bias=False)
        self.qk_norm = qk_norm
        self.norm_q = RMSNorm(self.head_dim, eps) if qk_norm else None
        self.norm_k = RMSNorm(self.head_dim, eps) if qk_norm else None
        self.core = core

    def _heads(self, x: Tensor) -> Tensor:
        batch, seq, _ = x.shape
        return x.reshape(batch, seq, -1, self.head_dim).transpose(0, 2, 1, 3)

    def construct(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        source = x if context is None else context
        q = self._heads(self.to_q(x))
        k = self._heads(self.to_k(source))
        v = self._heads(self.to_v(source))
        if self.qk_norm:
            q = self.norm_q(q)
            k = self.norm_k(k)
        out = self.core(q, k, v, mask)
        batch, _, seq, _ = out.shape
        return self.to_out(out.transpose(0, 2, 1, 3).reshape(batch, seq, -1))


class FeedForward(nn.Cell):
    """SwiGLU MLP: down(silu(gate(x)) * up(x)), bias-free."""

    def __init__(self, hidden_size: int, ffn_size: int):
        super().__init__()
        self.gate_proj = Linear(hidden_size, ffn_size, bias=False)
        self.up_proj = Linear(hidden_size, ffn_size, bias=False)
        self.down_proj = Linear(ffn_size, hidden_size, bias=False)

    def construct(self, x: Tensor) -> Tensor:
        return self.down_proj(mint.nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class TransformerBlock(nn.Cell):
    """One layer: modulated self-attention, cross-attention to text, modulated SwiGLU MLP (all residual).

    Called as `block(x, modulation, text, text_mask, pos)` with x (B, S, hidden), the shared timestep
    modulation (B, 6, hidden), text tokens (B, L, hidden), the text mask (B, 1, 1, L) or None, and the position
    embedding (1, S, hidden) to add first (`pos_embed_every_layer`) or None. The layer adds its own learned
    `scale_shift_table` (1, 6, hidden) to the shared modulation (adaLN-single).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        hidden, eps = config.hidden_size, config.norm_eps
        self.norm1 = RMSNorm(hidden, eps)
        self.attn = Attention(hidden, config.num_heads, config.qk_norm, eps, _core(config))
        self.cross_attn = Attention(hidden, config.num_heads, config.qk_norm, eps, _core(config))
        self.norm2 = RMSNorm(hidden, eps)
        self.mlp = FeedForward(hidden, config.ffn_size)
        self.scale_shift_table = Parameter(
            Tensor(np.zeros((1, 6, hidden), np.float32)), name="scale_shift_table"
        )

    def construct(
        self,
        x: Tensor,
        modulation: Tensor,
        text: Tensor,
        text_mask: Tensor | None = None,
        pos: Tensor | None = None,
    ) -> Tensor:
        if pos is not None:
            x = x + pos
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mint.chunk(
            modulation + self.scale_shift_table, 6, 1
        )
        x = x + gate_msa * self.attn(self.norm1(x) * (1.0 + scale_msa) + shift_msa)
        x = x + self.cross_attn(x, text, text_mask)
        return x + gate_mlp * self.mlp(self.norm2(x) * (1.0 + scale_mlp) + shift_mlp)


class TimestepEmbedder(nn.Cell):
    """Sinusoidal features of `t * timestep_scale` ([cos | sin], 10000^(-i/half) frequencies), then a SiLU MLP."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        half = config.timestep_embed_dim // 2
        self.scale = config.timestep_scale
        freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
        self.freqs = Tensor(freqs.astype(np.float32)[None])
        self.linear_1 = Linear(config.timestep_embed_dim, config.hidden_size, bias=False)
        self.linear_2 = Linear(config.hidden_size, config.hidden_size, bias=False)

    def construct(self, t: Tensor) -> Tensor:
        args = (t.astype(ms.float32) * self.scale)[:, None] * self.freqs
        features = mint.cat((mint.cos(args), mint.sin(args)), -1)
        return self.linear_2(mint.nn.functional.silu(self.linear_1(features)))


class TextProjection(nn.Cell):
    """One encoder's embeddings (B, L, D) -> (B, L, hidden): bias-free linear, then RMSNorm."""

    def __init__(self, text_dim: int, hidden_size: int, eps: float):
        super().__init__()
        self.linear = Linear(text_dim, hidden_size, bias=False)
        self.norm = RMSNorm(hidden_size, eps)

    def construct(self, emb: Tensor) -> Tensor:
        return self.norm(self.linear(emb))


def _core(config: TransformerConfig) -> nn.Cell:
    return make_attention_core(
        config.attention_backend, config.attention_chunk_size, config.attention_key_chunk_size
    )


class MovieGenTransformer(nn.Cell):
    """The Movie Gen Video transformer (velocity predictor of rectified flow).

    `model(latents, timesteps, text_embs, text_masks)`:
    - latents: (B, in_channels, T, H, W) scaled TAE latents; T, H, W divisible by `patch_size`.
    - timesteps: (B,) in [0, 1], 1 = pure noise (embedded as `t * timestep_scale`, i.e. the reference's
      0..1000 scale).
    - text_embs: tuple of (B, L_i, D_i) float embeddings, one per encoder in `config.text_encoders` order.
    - text_masks: tuple of (B, L_i) masks (1 = token, 0 = padding) in the same order, or None (no padding).
    - context_prefix, context_prefix_mask (optional): (B, P, hidden) tokens already projected to the model's
      width and their (B, P) mask, placed in front of the text in the cross-attention context (PT2V's
      reference-image tokens, `mg_transformer.personalized`); masked tokens are ignored exactly.
    - timestep_offset (optional): (B, hidden) added to the timestep embedding (Movie Gen Edit's task vector,
      `mg_transformer.editing`).
    Returns the velocity (B, out_channels, T, H, W), pointing from noise towards data (see rectified_flow).
    """

    def __init__(self, config: TransformerConfig, init: bool = True):
        super().__init__()
        config.validate()
        self.config = config
        hidden = config.hidden_size
        self.hidden_size = hidden
        self.patch_size = config.patch_size
        self.out_channels = config.out_channels
        self.in_channels = config.in_channels
        self.pos_embed_max_size = config.pos_embed_max_size
        self.text_encoders = config.text_encoders
        self.text_widths = tuple(config.text_dims[name] for name in config.text_encoders)
        self.pos_embed_every_layer = config.pos_embed_every_layer
        self.gradient_checkpointing = False

        self.patch_embed = Linear(config.patch_features, hidden, bias=False)
        max_t, max_h, max_w = config.pos_embed_max_size
        self.pos_embed_t = Parameter(Tensor(np.zeros((max_t, hidden), np.float32)), name="pos_embed_t")
        self.pos_embed_h = Parameter(Tensor(np.zeros((max_h, hidden), np.float32)), name="pos_embed_h")
        self.pos_embed_w = Parameter(Tensor(np.zeros((max_w, hidden), np.float32)), name="pos_embed_w")
        self.time_embed = TimestepEmbedder(config)
        self.time_modulation = Linear(hidden, 6 * hidden, bias=False)
        self.text_projections = nn.CellList(
            [TextProjection(dim, hidden, config.norm_eps) for dim in config.text_dims.values()]
        )
        self.blocks = nn.CellList([TransformerBlock(config) for _ in range(config.num_layers)])
        self.final_norm = RMSNorm(hidden, config.norm_eps)
        self.final_scale_shift_table = Parameter(
            Tensor(np.zeros((1, 2, hidden), np.float32)), name="final_scale_shift_table"
        )
        pt, ph, pw = config.patch_size
        self.proj_out = Linear(hidden, config.out_channels * pt * ph * pw, bias=False)
        if (
            init
        ):  # False: leave the values to the caller (e.g. `lazy()` + `initial_values`, one piece per rank)
            self.init_weights()

    @classmethod
    def lazy(cls, config: TransformerConfig) -> MovieGenTransformer:
        """The model with unmaterialised parameters (shapes only, no memory): for parallel setups that cut
        the parameters first and then write each rank's pieces of `initial_values` (sharded initialisation)."""
        from mindspore.nn.utils import no_init_parameters

        with no_init_parameters():
            return cls(config, init=False)

    def init_weights(self, seed: int | None = None) -> None:
        """Reference init: linears and position tables N(0, init_std); modulation tables N(0, 1/hidden);
        the shared adaLN projection and the output projection zero (so the model starts as a zero velocity).
        Deterministic given `seed`, or MindSpore's global seed (`mindspore.set_seed`) when `seed` is None."""
        params = dict(self.parameters_and_names())
        for name, value in self.initial_values(seed):
            params[name].set_data(Tensor(value))

    def initial_values(self, seed: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """(name, full value) of every parameter, one at a time in `parameters_and_names` order: what
        `init_weights` writes. Computed from the names and shapes alone, so a lazy model gives the values too."""
        rng = np.random.default_rng(ms.get_seed() if seed is None else seed)
        std = self.config.init_std
        hidden = self.hidden_size
        norm_weights = {id(cell.weight) for _, cell in self.cells_and_names() if isinstance(cell, RMSNorm)}
        for name, param in self.parameters_and_names():
            shape = param.shape
            if id(param) in norm_weights:
                value = np.ones(shape)
            elif name.endswith("scale_shift_table"):
                value = rng.standard_normal(shape) / math.sqrt(hidden)
            elif name.startswith(("time_modulation.", "proj_out.")):
                value = np.zeros(shape)
            else:
                value = rng.standard_normal(shape) * std
            yield name, value.astype(np.float32)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them.

        Under `mindspore.jit` the flag is read when the graph compiles: set it before the first jitted call.
        """
        self.gradient_checkpointing = bool(enabled)

    def _position_embedding(self, nt: int, nh: int, nw: int) -> Tensor:
        hidden = self.hidden_size
        table = (
            self.pos_embed_t[:nt].reshape(nt, 1, 1, hidden)
            + self.pos_embed_h[:nh].reshape(1, nh, 1, hidden)
            + self.pos_embed_w[:nw].reshape(1, 1, nw, hidden)
        )
        return table.reshape(1, nt * nh * nw, hidden)

    def _check_inputs(self, latents: Tensor, timesteps: Tensor, text_embs, text_masks) -> None:
        if latents.ndim != 5 or latents.shape[1] != self.in_channels:
            raise ValueError(
                f"MovieGenTransformer: latents must be (B, {self.in_channels}, T, H, W), got {latents.shape}"
            )
        for size, patch, limit, axis in zip(  # noqa: B905 (graph mode does not parse zip's strict=)
            latents.shape[2:], self.patch_size, self.pos_embed_max_size, "THW"
        ):
            if size % patch:
                raise ValueError(
                    f"MovieGenTransformer: latent {axis}={size} is not divisible by patch size {patch}"
                )
            if size // patch > limit:
                raise ValueError(
                    f"MovieGenTransformer: latent {axis}={size} gives {size // patch} patches, more than "
                    f"pos_embed_max_size allows ({limit}); raise it (position tables resize on load)"
                )
        if len(text_embs) != len(self.text_encoders):
            raise ValueError(
                f"MovieGenTransformer: expected {len(self.text_encoders)} text embeddings in the order "
                f"{self.text_encoders}, got {len(text_embs)}"
            )
        if text_masks is not None and len(text_masks) != len(text_embs):
            raise ValueError(
                f"MovieGenTransformer: got {len(text_masks)} text masks for {len(text_embs)} embeddings"
            )
        batch = latents.shape[0]
        if timesteps.shape != (batch,):
            raise ValueError(
                f"MovieGenTransformer: timesteps must be ({batch},), one per sample, got {timesteps.shape}"
            )
        for index, name in enumerate(self.text_encoders):
            emb = text_embs[index]
            width = self.text_widths[index]
            if emb.ndim != 3 or emb.shape[0] != batch or emb.shape[2] != width:
                raise ValueError(
                    f"MovieGenTransformer: text embedding {name} must be ({batch}, L, {width}), got {emb.shape}"
                )
            if text_masks is not None and text_masks[index].shape != emb.shape[:2]:
                raise ValueError(
                    f"MovieGenTransformer: text mask {name} must be {emb.shape[:2]} (batch, tokens) like its "
                    f"embedding, got {text_masks[index].shape}"
                )

    def _check_prefix(self, batch: int, prefix: Tensor, mask: Tensor | None) -> None:
        if prefix.ndim != 3 or prefix.shape[0] != batch or prefix.shape[2] != self.hidden_size:
            raise ValueError(
                f"MovieGenTransformer: context_prefix must be ({batch}, L, {self.hidden_size}) projected tokens, "
                f"got {prefix.shape}"
            )
        if mask is None or mask.shape != prefix.shape[:2]:
            raise ValueError(
                f"MovieGenTransformer: context_prefix_mask must be {prefix.shape[:2]} (1 = attend, 0 = ignore), "
                f"got {None if mask is None else mask.shape}"
            )

    def _text_tokens(self, text_embs, text_masks, prefix=None, prefix_mask=None):
        """Project and concatenate every encoder's tokens, after the `prefix` tokens (already projected, e.g.
        PT2V's reference image) when given; the mask becomes (B, 1, 1, L) or None."""
        tokens = ()
        masks = ()
        for index, projection in enumerate(self.text_projections):
            tokens = (*tokens, projection(text_embs[index]))
            if text_masks is not None:
                masks = (*masks, text_masks[index].astype(ms.float32))
        if prefix is not None:
            tokens = (prefix, *tokens)
            if text_masks is None:
                masks = tuple(mint.ones(t.shape[:2], dtype=ms.float32) for t in tokens[1:])
            masks = (prefix_mask.astype(ms.float32), *masks)
        text = tokens[0] if len(tokens) == 1 else mint.cat(tokens, 1)
        if text_masks is None and prefix is None:
            return text, None
        mask = masks[0] if len(masks) == 1 else mint.cat(masks, 1)
        return text, mask.reshape(mask.shape[0], 1, 1, mask.shape[1])

    def construct(
        self,
        latents: Tensor,
        timesteps: Tensor,
        text_embs: tuple[Tensor, ...],
        text_masks: tuple[Tensor, ...] | None = None,
        context_prefix: Tensor | None = None,
        context_prefix_mask: Tensor | None = None,
        timestep_offset: Tensor | None = None,
    ) -> Tensor:
        self._check_inputs(latents, timesteps, text_embs, text_masks)
        if context_prefix is not None:
            self._check_prefix(latents.shape[0], context_prefix, context_prefix_mask)
        batch, channels, frames, height, width = latents.shape
        pt, ph, pw = self.patch_size
        nt, nh, nw = frames // pt, height // ph, width // pw
        patches = latents.reshape(batch, channels, nt, pt, nh, ph, nw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        x = self.patch_embed(patches.reshape(batch, nt * nh * nw, channels * pt * ph * pw))
        pos = self._position_embedding(nt, nh, nw)
        if not self.pos_embed_every_layer:
            x = x + pos

        t_emb = self.time_embed(timesteps)
        if timestep_offset is not None:
            t_emb = t_emb + timestep_offset
        modulation = self.time_modulation(mint.nn.functional.silu(t_emb)).reshape(batch, 6, self.hidden_size)
        text, text_mask = self._text_tokens(text_embs, text_masks, context_prefix, context_prefix_mask)

        for block in self.blocks:
            if self.pos_embed_every_layer and self.gradient_checkpointing:
                x = ms.recompute(block, x, modulation, text, text_mask, pos)
            elif self.pos_embed_every_layer:
                x = block(x, modulation, text, text_mask, pos)
            elif self.gradient_checkpointing:
                x = ms.recompute(block, x, modulation, text, text_mask)
            else:
                x = block(x, modulation, text, text_mask)

        shift, scale = mint.chunk(self.final_scale_shift_table + t_emb[:, None], 2, 1)
        x = self.proj_out(self.final_norm(x) * (1.0 + scale) + shift)
        out = x.reshape(batch, nt, nh, nw, self.out_channels, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return out.reshape(batch, self.out_channels, frames, height, width)

    # Checkpoints (config.json + model.safetensors); implemented in mg_transformer.pretrained.
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `directory` (each file atomically)."""
        from mg_transformer.pretrained import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, strict: bool = True, **overrides) -> MovieGenTransformer:
        """Rebuild a saved model; `overrides` change config fields (e.g. a larger `pos_embed_max_size`, whose
        position tables are then resized by linear interpolation)."""
        from mg_transformer.pretrained import from_pretrained

        return from_pretrained(directory, strict=strict, **overrides)
