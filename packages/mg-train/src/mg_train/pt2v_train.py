"""`mg-train train` for personalised Movie Gen (PT2V): the transformer task of `transformer_train` with a
reference image per clip, on the same engine, sources and parallel plan.

The model is mg-transformer's `PersonalizedTransformer`: the T2V transformer (`model.init_from` a T2V run, or
the previous PT2V stage), a CLIP vision tower (`reference.vision`: a Hugging Face folder or "tiny"; or the
previous stage's) and a new reference projection (seeded like the text projections, or the previous stage's).
The paper's three stages are configs (`transformer/pt2v_stage{1,2,3}_*`): stages 1-2 keep the vision tower
frozen (its parameters are not trained, not in the optimizer and not in EMA) and take the reference from the
clip itself; stage 3 trains it too on cross-paired references (`reference.columns: [cross_reference]`).

Each sample drops its reference with probability `reference.dropout` (a key-padding mask: exactly the T2V
model for that sample), drawn like the other step draws (`draws.step_rng`, stream 3) for the global batch.
The text encoders and the TAE (or the caches) stay frozen as for T2V.

Run directory: as for T2V, plus `pt2v/` (the PT2V folder, `PersonalizedTransformer.from_pretrained`) and a
`pipeline/` that samples with `--reference` (`mg-train sample`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mindspore import Tensor, nn

import mg_parallel as mp
from mg_data.atomic import atomic_dir
from mg_parallel.sharded import ShardSpec
from mg_train import paths
from mg_train.checkpoint import Checkpoint
from mg_train.config.schema import TransformerTrainConfig
from mg_train.draws import rank_slice, step_rng
from mg_train.export import PT2V_FILES, write_personalized_files
from mg_train.transformer_train import (
    TrainConfigError,
    TransformerTask,
    conditioned_losses,
    init_from_folder,
    initial_pieces,
)
from mg_transformer.model import MovieGenTransformer
from mg_transformer.personalized import (
    PROJECTION_FILE,
    TRANSFORMER_DIR,
    VISION_DIR,
    PersonalizedTransformer,
    is_personalized_folder,
    read_reference_projection,
)
from mg_transformer.vision import CLIPVisionEncoder, preprocess

REFERENCE_STREAM = 3  # step_rng stream of the reference dropout (0: t and text, 1: noise, 2: TAE posterior)


def personalized_source(cfg: TransformerTrainConfig) -> Path | None:
    """The PT2V folder `model.init_from` names (itself, or a run's `pt2v/` or `pipeline/`), else None."""
    return init_from_folder(cfg, paths.PT2V_DIR, is_personalized_folder)


def is_personalized(cfg: TransformerTrainConfig) -> bool:
    """Whether the run trains PT2V: a vision encoder is named or `init_from` is a PT2V model."""
    return bool(cfg.reference.vision) or personalized_source(cfg) is not None


def vision_encoder(cfg: TransformerTrainConfig) -> CLIPVisionEncoder:
    """`reference.vision` when set (a new encoder for this stage), else the previous stage's."""
    source = cfg.reference.vision or personalized_source(cfg) / VISION_DIR
    try:
        return CLIPVisionEncoder.from_source(source, seed=cfg.reference.seed)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainConfigError(f"reference.vision: {exc}") from None


class PT2VTask(TransformerTask):
    """Personalised Movie Gen for `engine.train`: TransformerTask plus reference images and the vision tower."""

    name = "train-pt2v"

    def __init__(self, cfg: TransformerTrainConfig, ctx: mp.ParallelContext):
        self.source = personalized_source(cfg)
        self.vision = vision_encoder(cfg)
        self.vision.set_train(cfg.reference.train_vision)
        self.lr_scales = {"vision.": cfg.reference.vision_lr_scale}  # frozen towers have no optimizer entry
        super().__init__(cfg, ctx)
        # full values before any cut (ZeRO-3 shards trained parameters once the optimizer is built)
        self.own_initial = {f"vision.{n}": p.asnumpy() for n, p in self.vision.parameters_and_names()}
        self.own_initial.update(
            {
                f"reference_projection.{n}": p.asnumpy()
                for n, p in self.model.reference_projection.parameters_and_names()
            }
        )
        if self.source is not None:  # the previous stage's projection (the tower came with `vision_encoder`)
            values = read_reference_projection(self.source / PROJECTION_FILE, self.model.reference_projection)
            self.own_initial.update({f"reference_projection.{n}": v for n, v in values.items()})

    def dataset_options(self) -> dict:
        return {
            "reference_columns": tuple(self.config.reference.columns),
            "reference_size": self.vision.config.image_size,
        }

    def extra_keys(self) -> list[str]:
        return ["reference"]

    def build_model(self) -> nn.Cell:
        self.transformer = MovieGenTransformer.lazy(self.model_config)
        model = PersonalizedTransformer(self.transformer, self.vision, seed=self.config.reference.seed)
        model.set_vision_trainable(self.config.reference.train_vision)
        return model

    def losses(self):
        return conditioned_losses(self.model, self.text.null(), self.config.flow.sigma_min)

    def pixels(self, batch: dict) -> Tensor:
        return Tensor(preprocess(np.asarray(batch["reference"]), self.vision.config.image_size))

    def extra_inputs(self, batch: dict, step: int, micro: int) -> tuple:
        size = len(batch["index"])
        world, rank = self.ctx.data_world, self.ctx.data_rank
        rng = step_rng(self.config.train.seed, step, micro, REFERENCE_STREAM)
        keep = rng.random(size * world) >= self.config.reference.dropout
        return self.pixels(batch), Tensor(rank_slice(keep, rank, world).astype(np.float32))

    def validation_inputs(self, batch: dict) -> tuple:
        return self.pixels(batch), Tensor(np.ones(len(batch["index"]), np.float32))

    def initialize(self) -> None:
        """The transformer's pieces as for T2V (`init_from`'s transformer, or the seed); the vision tower and the
        projection from the previous stage's folder, else as built (the named encoder, a seeded projection)."""
        prefix = "transformer."
        params = {p.name: p for p in self.model.get_parameters()}
        inner = {name[len(prefix) :]: p for name, p in params.items() if name.startswith(prefix)}
        for param, piece in initial_pieces(self.config, self.model_config, inner, self.ctx):
            param.set_data(Tensor(np.ascontiguousarray(piece).reshape(param.shape), param.dtype))
        own = self.own_initial
        for name, full in own.items():  # one process's values, cut for this rank (ZeRO-3 shards trained ones)
            param = params[name]
            piece = ShardSpec.of(param).cut(full, self.ctx.layout, self.ctx.rank_id)
            param.set_data(Tensor(np.ascontiguousarray(piece).reshape(param.shape), param.dtype))
        self.own_initial = {}  # written; no second copy of the tower for the rest of the run

    def describe(self) -> list[str]:
        vision = self.vision.config
        reference = self.config.reference
        scale = f" at {reference.vision_lr_scale:g} x the LR" if reference.vision_lr_scale != 1 else ""
        state = f"trained{scale}" if reference.train_vision else "frozen"
        origin = self.config.reference.vision or f"{self.source / VISION_DIR}"
        return [
            *super().describe(),
            f"pt2v: vision tower {origin} ({vision.num_hidden_layers} layers, width {vision.hidden_size}, "
            f"{vision.image_size} px, {self.model.num_reference_tokens} tokens), {state}; references from "
            f"{list(self.config.reference.columns)}, dropped with p={self.config.reference.dropout:g}",
        ]

    def model_info(self) -> dict:
        from dataclasses import asdict

        return {
            "kind": "pt2v",
            "config": {"transformer": self.model_config.to_dict(), "vision": asdict(self.vision.config)},
        }

    def export(self, checkpoint: Path, out: Path) -> Path:
        """`pt2v/` and, when the TAE and the text encoders are known, a `pipeline/` holding it."""
        opened = Checkpoint.open(checkpoint)
        folder = out / paths.PT2V_DIR
        with atomic_dir(folder, replaces=PT2V_FILES) as tmp:
            write_personalized_files(tmp, opened, opened.manifest["model"])
        written = self.write_pipeline(
            out, folder / TRANSFORMER_DIR, extra=[folder / VISION_DIR, folder / PROJECTION_FILE]
        )
        return out if written else folder
