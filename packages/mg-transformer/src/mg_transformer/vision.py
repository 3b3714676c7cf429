"""CLIP vision tower (Long-prompt MetaCLIP's image encoder) in MindSpore, loading Hugging Face `CLIPVisionModel`,
`CLIPVisionModelWithProjection` and `CLIPModel` folders: the reference-image encoder of personalised Movie Gen
(PT2V).

An image (B, 3, S, S), normalised with CLIP's mean and std (`preprocess`), is cut into patches (the patch
embedding is a stride = kernel convolution, computed here as one matmul on the flattened patches), a class token
is put in front, learned positions are added, then a pre-norm, the same blocks as CLIP's text tower without a
causal mask, and, for the pooled output, a post-norm of the class token. `construct` returns
(states (B, 1 + patches, D), pooled (B, D)) like `transformers`' `last_hidden_state` and `pooler_output`;
`tokens` gives the post-normed states of every position, which PT2V projects into the transformer's
cross-attention context.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import mindspore as ms
import numpy as np
from mindspore import Parameter, mint, nn, ops

from mg_transformer.text.clip import CLIPBlock, block_hf_names, load_clip_tower
from mg_transformer.text.hf_io import (
    CONFIG,
    save_hf_folder,
)
from mg_transformer.text.layers import LayerNorm, activation

_VISION_MODEL_TYPES = ("clip_vision_model", "metaclip_2_vision_model")
_FULL_MODEL_TYPES = ("clip", "metaclip_2")

# CLIP's image normalisation (its image processor's defaults), RGB.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class CLIPVisionConfig:
    """A Hugging Face `CLIPVisionConfig` (same field names and defaults) plus whether a visual projection exists."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    projection_dim: int = 512
    with_projection: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        activation(self.hidden_act)  # fail early on unknown names

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_hf(cls, config: dict, source: str = CONFIG) -> CLIPVisionConfig:
        """Read a `clip_vision_model` config, or the `vision_config` of a full `clip` config."""
        model_type = config.get("model_type")
        architectures = config.get("architectures") or []
        with_projection = any(a.endswith(("VisionModelWithProjection", "CLIPModel")) for a in architectures)
        projection_dim = config.get("projection_dim")
        if model_type in _FULL_MODEL_TYPES:
            if not isinstance(config.get("vision_config"), dict):
                raise ValueError(f"{source}: a {model_type!r} config needs a 'vision_config' object")
            config = config["vision_config"]
            with_projection = True
        elif model_type not in _VISION_MODEL_TYPES:
            raise ValueError(
                f"{source}: model_type {model_type!r} is not a CLIP vision model "
                f"(expected one of {', '.join(_VISION_MODEL_TYPES + _FULL_MODEL_TYPES)})"
            )
        known = {f.name for f in fields(cls)} - {"with_projection"}
        values = {k: v for k, v in config.items() if k in known and v is not None}
        if projection_dim is not None:
            values["projection_dim"] = projection_dim
        try:
            return cls(**values, with_projection=with_projection)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err

    @classmethod
    def tiny(cls) -> CLIPVisionConfig:
        """A random-initialised tower for tests and CPU recipes: 64-px images, 16-px patches (17 tokens),
        width 64, 2 layers; a real run loads Long-prompt MetaCLIP's tower instead."""
        return cls(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=64,
            patch_size=16,
        )

    def to_hf(self) -> dict:
        """A `config.json` dict that `transformers.CLIPVisionModel(WithProjection)` reads."""
        values = asdict(self)
        values.pop("with_projection")
        architecture = "CLIPVisionModelWithProjection" if self.with_projection else "CLIPVisionModel"
        return {**values, "model_type": "clip_vision_model", "architectures": [architecture]}


class CLIPVisionEncoder(nn.Cell):
    """`encoder(pixels (B, 3, S, S) float, CLIP-normalised)` -> (states (B, 1 + patches, D), pooled (B, D)).

    Parameters are created as zeros; load with `from_pretrained` or `init_weights`.
    """

    def __init__(self, config: CLIPVisionConfig, dtype: ms.Type = ms.float32) -> None:
        super().__init__()
        self.config = config
        d, p = config.hidden_size, config.patch_size
        self.class_embedding = Parameter(ops.zeros((d,), dtype), name="class_embedding")
        self.patch_weight = Parameter(ops.zeros((d, config.num_channels, p, p), dtype), name="patch_weight")
        self.position_embedding = Parameter(
            ops.zeros((config.num_patches + 1, d), dtype), name="position_embedding"
        )
        self.pre_norm = LayerNorm(d, config.layer_norm_eps, dtype)
        self.blocks = nn.CellList([CLIPBlock(config, dtype) for _ in range(config.num_hidden_layers)])
        self.post_norm = LayerNorm(d, config.layer_norm_eps, dtype)
        if config.with_projection:
            self.visual_projection = mint.nn.Linear(
                d, config.projection_dim, bias=False, weight_init="zeros", dtype=dtype
            )
        self.set_train(False)

    def _check(self, pixels: ms.Tensor) -> None:
        c, s = self.config.num_channels, self.config.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (c, s, s):
            raise ValueError(
                f"expected CLIP-normalised pixels (B, {c}, {s}, {s}), got shape {tuple(pixels.shape)} "
                "(mg_transformer.vision.preprocess resizes and normalises images)"
            )

    def patches(self, pixels: ms.Tensor) -> ms.Tensor:
        """(B, C, S, S) -> (B, patches, C p p), row-major patches, features in the conv weight's (C, p, p) order."""
        b, c, s, _ = pixels.shape
        p = self.config.patch_size
        g = s // p
        x = pixels.reshape(b, c, g, p, g, p)
        return ops.transpose(x, (0, 2, 4, 1, 3, 5)).reshape(b, g * g, c * p * p)

    def construct(self, pixels: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
        self._check(pixels)
        b = pixels.shape[0]
        d = self.config.hidden_size
        weight = self.patch_weight.reshape(d, -1)
        x = ops.matmul(self.patches(pixels.astype(weight.dtype)), weight.swapaxes(0, 1))
        cls = ops.broadcast_to(self.class_embedding.reshape(1, 1, d), (b, 1, d))
        x = mint.cat([cls, x], 1) + self.position_embedding[None]
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x, None)
        return x, self.post_norm(x[:, 0])

    def tokens(self, pixels: ms.Tensor) -> ms.Tensor:
        """Post-normed states of every position (B, 1 + patches, D): the vision tokens PT2V projects."""
        states, _ = self.construct(pixels)  # not self(...): graph mode cannot call a cell on itself
        return self.post_norm(states)

    def project(self, pooled: ms.Tensor) -> ms.Tensor:
        """The image embedding (B, projection_dim) of checkpoints with a `visual_projection`."""
        if not self.config.with_projection:
            raise ValueError(
                "this CLIP vision model has no visual_projection (config.with_projection is False)"
            )
        return self.visual_projection(pooled)

    # --- Hugging Face weights -----------------------------------------------------------------------------

    def hf_names(self) -> dict[str, str]:
        """Parameter path -> Hugging Face checkpoint key."""
        names = {
            "class_embedding": "vision_model.embeddings.class_embedding",
            "patch_weight": "vision_model.embeddings.patch_embedding.weight",
            "position_embedding": "vision_model.embeddings.position_embedding.weight",
            "pre_norm.weight": "vision_model.pre_layrnorm.weight",  # sic: transformers' spelling
            "pre_norm.bias": "vision_model.pre_layrnorm.bias",
            "post_norm.weight": "vision_model.post_layernorm.weight",
            "post_norm.bias": "vision_model.post_layernorm.bias",
        }
        names.update(block_hf_names("vision_model.encoder.layers", self.config.num_hidden_layers))
        if self.config.with_projection:
            names["visual_projection.weight"] = "visual_projection.weight"
        return names

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike, dtype: ms.Type = ms.float32, strict: bool = True
    ) -> CLIPVisionEncoder:
        """Build from a Hugging Face folder (`config.json` + safetensors); a text tower in it is skipped."""
        return load_clip_tower(cls, CLIPVisionConfig, folder, "vision", dtype, strict)

    @classmethod
    def from_source(cls, source: str | os.PathLike, seed: int = 0) -> CLIPVisionEncoder:
        """A Hugging Face folder, or "tiny" (`CLIPVisionConfig.tiny`, random weights from `seed`)."""
        if str(source) == "tiny":
            return cls(CLIPVisionConfig.tiny()).init_weights(seed)
        if not os.path.isdir(source):
            raise FileNotFoundError(
                f"vision encoder {source!r}: not a folder (a Hugging Face CLIP vision or CLIP model) nor 'tiny'"
            )
        return cls.from_pretrained(source)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write `config.json` + `model.safetensors` in the layout of `transformers.CLIPVisionModel(WithProjection)`."""
        save_hf_folder(self, self.hf_names(), folder, self.config.to_hf())

    def init_weights(self, seed: int | Sequence[int]) -> CLIPVisionEncoder:
        """Random weights, deterministic by seed: 0.2-std class token and positions, 1/sqrt(fan_in) linears."""
        rng = np.random.default_rng(seed)
        for name, param in self.parameters_and_names():
            if "norm" in name:
                continue  # weight one, bias zero
            if name in ("class_embedding", "position_embedding"):
                std = 0.2
            elif name == "patch_weight":
                std = float(np.prod(param.shape[1:])) ** -0.5
            elif name.endswith("bias"):
                std = 0.02
            else:
                std = param.shape[1] ** -0.5
            values = rng.standard_normal(param.shape, dtype=np.float32) * np.float32(std)
            param.set_data(ms.Tensor(values, dtype=param.dtype))
        return self


def preprocess(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB images (B, H, W, 3) (or one (H, W, 3)) -> CLIP-normalised float32 (B, 3, size, size).

    The centred square crop of each image, resized with area averaging when shrinking and bilinear
    interpolation when enlarging (separable, float64), scaled to [0, 1] and normalised with CLIP's mean and std.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected RGB images (B, H, W, 3) or (H, W, 3), got shape {images.shape}")
    out = []
    for image in images.astype(np.float64) / 255.0:
        h, w, _ = image.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        square = image[top : top + side, left : left + side]
        out.append(_resize_axis(_resize_axis(square, size, 0), size, 1))
    pixels = (np.stack(out) - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)


def _resize_axis(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resize one axis of an (H, W, C) image: a (size x n) interpolation matrix applied along `axis`."""
    n = image.shape[axis]
    if n == size:
        return image
    if size < n:  # area: output pixel j averages input [j n / size, (j + 1) n / size)
        edges = np.arange(size + 1) * n / size
        left, right = edges[:-1, None], edges[1:, None]
        cells = np.arange(n)[None]
        weights = np.clip(np.minimum(right, cells + 1) - np.maximum(left, cells), 0, None) / (n / size)
    else:  # bilinear, half-pixel centres, clamped edges
        centres = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        low = np.floor(centres).astype(int)
        high = np.minimum(low + 1, n - 1)
        frac = centres - low
        weights = np.zeros((size, n))
        weights[np.arange(size), low] += 1 - frac
        weights[np.arange(size), high] += frac
    return np.moveaxis(np.tensordot(weights, np.moveaxis(image, axis, 0), axes=1), 0, axis)
