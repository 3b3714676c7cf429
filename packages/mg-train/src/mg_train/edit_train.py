"""`mg-train train` for Movie Gen Edit: the transformer task of `transformer_train` with an input video and an
editing task per example, on the same engine, sources and parallel plan.

The model is mg-transformer's `EditTransformer`: the T2V transformer with twice the input channels (the
noisy latent and the input video's latent), started from a T2V model (`model.init_from`: its weights, the
condition's patch-embedding columns zero, so the run starts as T2V) or from a previous edit stage, plus a task
embedding per `editing.tasks` ("none" first). Each example's text is the manifest's caption (the instruction,
as mg-data's editing sets write it); its input video comes from `editing.source_column`, loaded by the dataset
with the target's random choices (from the latent cache when there is one, so sources and targets both need
entries: cache a manifest listing both), and its task from `editing.task_column`.

Run directory: as for T2V, plus `edit/` (the edit folder, `EditTransformer.from_pretrained`) and a
`pipeline/` that edits videos (`mg-train edit`).
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
from mg_train.export import EDIT_FILES, write_edit_files
from mg_train.transformer_train import (
    TrainConfigError,
    TransformerTask,
    conditioned_losses,
    init_from_folder,
    initial_pieces,
    preset_config,
)
from mg_transformer import TransformerConfig
from mg_transformer.editing import (
    INFO_FILE,
    NO_TASK,
    TASK_FILE,
    TRANSFORMER_DIR,
    EditTransformer,
    is_edit_folder,
)
from mg_transformer.model import MovieGenTransformer

CONDITION_STREAM = 4  # step_rng stream of the condition's TAE posterior noise (pixel mode)


def edit_source(cfg: TransformerTrainConfig) -> Path | None:
    """The edit folder `model.init_from` names (itself, or a run's `edit/` or `pipeline/`), else None."""
    return init_from_folder(cfg, paths.EDIT_DIR, is_edit_folder)


def is_editing(cfg: TransformerTrainConfig) -> bool:
    """Whether the run trains Movie Gen Edit: tasks are named or `init_from` is an edit model."""
    return bool(cfg.editing.tasks) or edit_source(cfg) is not None


def widen_patch_embedding(name: str, stored: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """A T2V patch embedding (hidden, C p) as the edit model's (hidden, 2 C p): the condition's columns zero."""
    if name == "patch_embed.weight" and tuple(shape) == (stored.shape[0], 2 * stored.shape[1]):
        return np.concatenate([stored, np.zeros_like(stored)], axis=1)
    return None


class EditTask(TransformerTask):
    """Movie Gen Edit for `engine.train`: TransformerTask plus the input video and the task embedding."""

    name = "train-edit"

    def __init__(self, cfg: TransformerTrainConfig, ctx: mp.ParallelContext):
        self.source = edit_source(cfg)
        if self.source is not None:
            import json

            info = json.loads((self.source / INFO_FILE).read_text())
            if cfg.editing.tasks and [NO_TASK, *cfg.editing.tasks] != info["tasks"]:
                raise TrainConfigError(
                    f"editing.tasks={cfg.editing.tasks}: model.init_from's edit model knows {info['tasks'][1:]}; "
                    "leave editing.tasks empty to keep them"
                )
            self.tasks, self.task_tokens = tuple(info["tasks"]), int(info["task_tokens"])
        else:
            self.tasks, self.task_tokens = (NO_TASK, *cfg.editing.tasks), cfg.editing.task_tokens
        super().__init__(cfg, ctx)
        self.task_of = self._task_indices(self.dataset)
        self.val_task_of = self._task_indices(self.validator.dataset) if self.validator is not None else None
        # full values before any cut (ZeRO-3 shards trained parameters once the optimizer is built)
        self.own_initial = {key: p.asnumpy() for key, p in self.model.task_parameters().items()}
        if self.source is not None:  # the previous stage's task parameters
            self.own_initial = self.model.read_task_parameters(self.source / TASK_FILE)

    def _task_indices(self, dataset) -> np.ndarray:
        column = self.config.editing.task_column
        if column not in dataset.manifest.columns:
            raise TrainConfigError(f"editing.task_column={column!r}: not a column of {dataset.manifest.path}")
        names = [row.extra.get(column, "") or NO_TASK for row in dataset.manifest.rows]
        unknown = sorted(set(names) - set(self.tasks))
        if unknown:
            raise TrainConfigError(
                f"{dataset.manifest.path}: tasks {unknown} are not among editing.tasks {list(self.tasks[1:])}"
            )
        return np.asarray([self.tasks.index(n) for n in names], np.int32)

    def configure_model(self) -> TransformerConfig:
        if self.source is None:
            return preset_config(self.config, self.text.dims, self.latents.channels)
        stored = TransformerConfig.from_json(self.source / TRANSFORMER_DIR / "config.json").to_dict()
        data = {**stored, **self.config.model.overrides, "in_channels": stored["out_channels"]}
        return TransformerConfig.from_dict(data, source=f"{self.source} + model.overrides")

    def dataset_options(self) -> dict:
        return {"condition_column": self.config.editing.source_column}

    def extra_keys(self) -> list[str]:
        return ["condition"]

    def build_model(self) -> nn.Cell:
        data = {**self.model_config.to_dict(), "in_channels": 2 * self.model_config.out_channels}
        self.edit_config = TransformerConfig.from_dict(data, source="edit model")
        self.transformer = MovieGenTransformer.lazy(self.edit_config)
        editing = self.config.editing
        return EditTransformer(self.transformer, self.tasks, self.task_tokens, seed=editing.seed)

    def losses(self):
        return conditioned_losses(self.model, self.text.null(), self.config.flow.sigma_min)

    def condition(self, batch: dict, eps) -> Tensor:
        """The input videos' scaled latents: cached like the targets', or encoded by the frozen TAE."""
        return self.latents.latents({self.latents.key: batch["condition"]}, eps)

    def extra_inputs(self, batch: dict, step: int, micro: int) -> tuple:
        world, rank, size = self.ctx.data_world, self.ctx.data_rank, len(batch["index"])
        rng = step_rng(self.config.train.seed, step, micro, CONDITION_STREAM)

        def eps(shape: tuple[int, ...]) -> np.ndarray:
            return rank_slice(rng.standard_normal((size * world, *shape), dtype=np.float32), rank, world)

        tasks = self.task_of[np.asarray(batch["index"], np.int64)]
        return self.condition(batch, eps), Tensor(tasks)

    def validation_inputs(self, batch: dict) -> tuple:
        tasks = self.val_task_of[np.asarray(batch["index"], np.int64)]
        rng = np.random.default_rng([self.config.train.seed, CONDITION_STREAM])
        return self.condition(
            batch, lambda shape: rng.standard_normal((len(tasks), *shape), dtype=np.float32)
        ), Tensor(tasks)

    def initialize(self) -> None:
        """The transformer's pieces from the previous edit stage, or from the T2V model (condition columns zero),
        or from the seed; the task parameters from the previous stage's folder, else as built."""
        prefix = "transformer."
        params = {p.name: p for p in self.model.get_parameters()}
        inner = {name[len(prefix) :]: p for name, p in params.items() if name.startswith(prefix)}
        pieces = initial_pieces(self.config, self.edit_config, inner, self.ctx, adapt=widen_patch_embedding)
        for param, piece in pieces:
            param.set_data(Tensor(np.ascontiguousarray(piece).reshape(param.shape), param.dtype))
        own = self.own_initial
        for key, full in own.items():
            param = self.model.task_parameters()[key]
            piece = ShardSpec.of(param).cut(full, self.ctx.layout, self.ctx.rank_id)
            param.set_data(Tensor(np.ascontiguousarray(piece).reshape(param.shape), param.dtype))
        self.own_initial = {}  # written; no second copy of the tower for the rest of the run

    def describe(self) -> list[str]:
        origin = f"from {self.source}" if self.source is not None else "new"
        return [
            *super().describe(),
            f"edit: tasks {list(self.tasks)} ({origin}, {self.task_tokens} tokens each); input videos from column "
            f"{self.config.editing.source_column!r}",
        ]

    def model_info(self) -> dict:
        return {
            "kind": "edit",
            "config": {
                "transformer": self.edit_config.to_dict(),
                "tasks": list(self.tasks),
                "task_tokens": self.task_tokens,
            },
        }

    def export(self, checkpoint: Path, out: Path) -> Path:
        """`edit/` and, when the TAE and the text encoders are known, a `pipeline/` holding it."""
        opened = Checkpoint.open(checkpoint)
        folder = out / paths.EDIT_DIR
        with atomic_dir(folder, replaces=EDIT_FILES) as tmp:
            write_edit_files(tmp, opened, opened.manifest["model"])
        written = self.write_pipeline(
            out, folder / TRANSFORMER_DIR, extra=[folder / TASK_FILE, folder / INFO_FILE]
        )
        return out if written else folder
