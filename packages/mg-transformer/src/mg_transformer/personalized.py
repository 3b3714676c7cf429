"""Personalized Movie Gen Video (PT2V): the T2V transformer conditioned on a reference image as well as text.

As in the Movie Gen paper (figure 20): the reference image goes through a trainable CLIP vision tower
(Long-prompt MetaCLIP's, `mg_transformer.vision`), its tokens through their own projection (a `TextProjection`:
bias-free linear + RMSNorm, like each text encoder's), and they are placed in front of the text tokens in the
cross-attention context of every block. Everything else is the T2V model, whose weights PT2V starts from.

"No reference" is a key-padding mask over the vision tokens (`reference_mask` 0 for that sample): masked keys
get no attention weight, so such a sample's velocity is exactly the T2V model's (tested to 1e-6), also for a
model whose projection is already trained. That makes a reference-free sample, a reference dropout for
classifier-free guidance and a missing reference the same thing. The new projection is initialised like the
text projections (N(0, init_std) linear, unit RMSNorm): with a reference the model starts near T2V, not equal
to it (zero vision tokens would still take attention weight; the paper does not claim function preservation
either).

Folder layout of `save_pretrained` / `from_pretrained`:
```
pt2v/
  transformer/   config.json + model.safetensors   (MovieGenTransformer.save_pretrained)
  vision/        config.json + model.safetensors   (Hugging Face CLIPVisionModel layout)
  reference_projection.safetensors                 (the new projection: linear.weight, norm.weight)
```
"""

from __future__ import annotations

import os
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from safetensors.numpy import load_file, save_file

from mg_transformer._atomic import atomic_dir
from mg_transformer.model import MovieGenTransformer, TextProjection
from mg_transformer.vision import CLIPVisionEncoder

TRANSFORMER_DIR = "transformer"
VISION_DIR = "vision"
PROJECTION_FILE = "reference_projection.safetensors"
FOLDER_ENTRIES = (TRANSFORMER_DIR, VISION_DIR, PROJECTION_FILE)


def is_personalized_folder(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds a PT2V model (or a pipeline with one): the reference projection is there."""
    return (Path(directory) / PROJECTION_FILE).is_file() and (Path(directory) / VISION_DIR).is_dir()


def write_reference_parts(
    directory: Path, vision: CLIPVisionEncoder, projection: dict[str, np.ndarray]
) -> None:
    """The PT2V folder's own parts next to its `transformer/`: `vision/` (Hugging Face layout) and the
    reference projection. `save_pretrained` and mg-train's export (which streams the transformer) share it."""
    (directory / VISION_DIR).mkdir()
    vision.save_pretrained(directory / VISION_DIR)
    save_file(
        {k: np.ascontiguousarray(v, np.float32) for k, v in projection.items()},
        str(directory / PROJECTION_FILE),
        metadata={"format": "np"},
    )


class PersonalizedTransformer(nn.Cell):
    """`model(latents, timesteps, text_embs, text_masks, reference_pixels, reference_mask)` -> velocity.

    - reference_pixels: (B, 3, S, S) CLIP-normalised images (`vision.preprocess`), or None: the T2V model.
    - reference_mask: (B,) 1 = use this sample's reference, 0 = none (its pixels are ignored); default all 1.
    The other arguments and the output are `MovieGenTransformer`'s.
    """

    def __init__(self, transformer: MovieGenTransformer, vision: CLIPVisionEncoder, seed: int = 0) -> None:
        super().__init__()
        self.transformer = transformer
        self.vision = vision
        config = transformer.config
        self.reference_projection = TextProjection(
            vision.config.hidden_size, config.hidden_size, config.norm_eps
        )
        rng = np.random.default_rng(seed)
        weight = self.reference_projection.linear.weight
        weight.set_data(Tensor((rng.standard_normal(weight.shape) * config.init_std).astype(np.float32)))

    @property
    def num_reference_tokens(self) -> int:
        return self.vision.config.num_patches + 1

    def reference_tokens(self, reference_pixels: Tensor) -> Tensor:
        """(B, 1 + patches, hidden): the projected vision tokens of the reference images."""
        return self.reference_projection(self.vision.tokens(reference_pixels))

    def construct(
        self,
        latents: Tensor,
        timesteps: Tensor,
        text_embs: tuple[Tensor, ...],
        text_masks: tuple[Tensor, ...] | None = None,
        reference_pixels: Tensor | None = None,
        reference_mask: Tensor | None = None,
    ) -> Tensor:
        if reference_pixels is None:
            return self.transformer(latents, timesteps, text_embs, text_masks)
        batch = latents.shape[0]
        if reference_pixels.shape[0] != batch:
            raise ValueError(
                f"PersonalizedTransformer: {reference_pixels.shape[0]} reference images for a batch of {batch}"
            )
        tokens = self.reference_tokens(reference_pixels)
        if reference_mask is None:
            mask = ops.ones(tokens.shape[:2], ms.float32)
        else:
            if reference_mask.shape != (batch,):
                raise ValueError(
                    f"PersonalizedTransformer: reference_mask must be ({batch},), one flag per sample, "
                    f"got {reference_mask.shape}"
                )
            mask = ops.broadcast_to(reference_mask.astype(ms.float32).reshape(batch, 1), tokens.shape[:2])
        return self.transformer(latents, timesteps, text_embs, text_masks, tokens, mask)

    def set_vision_trainable(self, trainable: bool) -> None:
        """Freeze (stages 1-2 of PT2V training) or unfreeze (stage 3) the vision tower."""
        for param in self.vision.get_parameters():
            param.requires_grad = bool(trainable)

    # --- folders ----------------------------------------------------------------------------------------

    @classmethod
    def from_t2v(
        cls, transformer: str | os.PathLike, vision: str | os.PathLike, seed: int = 0
    ) -> PersonalizedTransformer:
        """PT2V initialised from a T2V model folder and a Hugging Face CLIP vision (or full CLIP) folder."""
        return cls(
            MovieGenTransformer.from_pretrained(transformer), CLIPVisionEncoder.from_pretrained(vision), seed
        )

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the folder described in the module docstring; it appears whole (a temporary folder takes
        the place of `directory`)."""
        directory = Path(directory)
        projection = {
            name: param.asnumpy() for name, param in self.reference_projection.parameters_and_names()
        }
        with atomic_dir(directory, replaces=FOLDER_ENTRIES) as tmp:
            self.transformer.save_pretrained(tmp / TRANSFORMER_DIR)
            write_reference_parts(tmp, self.vision, projection)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> PersonalizedTransformer:
        directory = Path(directory)
        for name in FOLDER_ENTRIES:
            if not (directory / name).exists():
                raise FileNotFoundError(
                    f"{directory / name}: missing; a PT2V folder holds {TRANSFORMER_DIR}/, {VISION_DIR}/ and "
                    f"{PROJECTION_FILE} (PersonalizedTransformer.save_pretrained)"
                )
        model = cls.from_t2v(directory / TRANSFORMER_DIR, directory / VISION_DIR)
        model.load_reference_projection(directory / PROJECTION_FILE)
        return model

    def load_reference_projection(self, path: str | os.PathLike) -> None:
        """Set the reference projection from its safetensors file (checked against this model's shapes)."""
        for name, value in read_reference_projection(path, self.reference_projection).items():
            dict(self.reference_projection.parameters_and_names())[name].set_data(Tensor(value))


def read_reference_projection(path: str | os.PathLike, projection: nn.Cell) -> dict[str, np.ndarray]:
    """The tensors of a `reference_projection.safetensors`, checked against `projection`'s names and shapes."""
    saved = load_file(str(path))
    params = dict(projection.parameters_and_names())
    if saved.keys() != params.keys():
        raise ValueError(f"{path}: tensors {sorted(saved)}, expected {sorted(params)}")
    for name, value in saved.items():
        if tuple(value.shape) != tuple(params[name].shape):
            raise ValueError(
                f"{path}: {name} has shape {value.shape}, the models in the folder need "
                f"{tuple(params[name].shape)}"
            )
    return {name: value.astype(np.float32) for name, value in saved.items()}
