"""Movie Gen Edit: the T2V transformer conditioned on an input video and an editing task (paper figures 24-26).

- The input video's latent is concatenated with the noisy latent along channels before patchify: the
  transformer is the T2V model with twice the input channels, and `from_t2v` gives the new patch-embedding
  columns (the condition's) zeros, so the starting point is exactly the T2V model whatever the condition
  (T2V itself is this network with a black video as the condition).
- A learned embedding per editing task is mapped by one linear layer to `task_tokens` (4) tokens in the
  cross-attention context and by another to a vector added to the timestep embedding. Cross-attention has no
  positions over its context, so the tokens' place among the text tokens does not matter; they go through the
  same prefix path as PT2V's reference tokens. Task 0 is "none" (plain T2V, or an edit without a task
  embedding): its tokens are masked keys and its vector is zeroed, so a model with task 0 and a black
  condition is T2V exactly, also after training.
- Init: task embeddings N(0, 1), the token linear N(0, init_std) (like the text projections), the time linear
  zero (the timestep embedding starts unchanged).

Folder layout of `save_pretrained` / `from_pretrained`:
```
edit/
  transformer/             config.json + model.safetensors (in_channels = 2 x latent channels)
  task_embedding.safetensors   embedding.weight, tokens.weight, time.weight
  edit.json                the task names (index 0: "none") and the token count
```
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops
from safetensors.numpy import load_file, save_file

from mg_transformer._atomic import atomic_dir
from mg_transformer.config import TransformerConfig
from mg_transformer.model import MovieGenTransformer

TRANSFORMER_DIR = "transformer"
TASK_FILE = "task_embedding.safetensors"
INFO_FILE = "edit.json"
FOLDER_ENTRIES = (TRANSFORMER_DIR, TASK_FILE, INFO_FILE)
NO_TASK = "none"
# task_embedding.safetensors key -> the parameter's name in EditTransformer (and in training checkpoints)
TASK_TENSORS = {
    "embedding.weight": "embedding",
    "tokens.weight": "tokens.weight",
    "time.weight": "time.weight",
}
# The editing tasks of mg-data's synthetic sets (stage I-III), after "none".
DEFAULT_TASKS = (NO_TASK, "recolor", "mark", "remove", "background")


def is_edit_folder(directory: str | os.PathLike) -> bool:
    """Whether `directory` holds an edit model (or a pipeline with one)."""
    return (Path(directory) / TASK_FILE).is_file() and (Path(directory) / INFO_FILE).is_file()


def write_edit_parts(
    directory: Path, tasks: Sequence[str], task_tokens: int, tensors: dict[str, np.ndarray]
) -> None:
    """The edit folder's own parts next to its `transformer/`: the task embedding and its linears, and edit.json.
    `save_pretrained` and mg-train's export (which streams the transformer) share it."""
    save_file(
        {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()},
        str(directory / TASK_FILE),
        metadata={"format": "np"},
    )
    info = {"tasks": list(tasks), "task_tokens": int(task_tokens)}
    (directory / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")


class EditTransformer(nn.Cell):
    """`model(latents, timesteps, text_embs, text_masks, condition, task)` -> velocity.

    - condition: (B, C, T, H, W) scaled TAE latents of the input video (a black video's for T2V).
    - task: (B,) int task indices into `tasks` (0: "none").
    The other arguments and the output are `MovieGenTransformer`'s, whose `in_channels` is 2 C.
    """

    def __init__(
        self,
        transformer: MovieGenTransformer,
        tasks: Sequence[str] = DEFAULT_TASKS,
        task_tokens: int = 4,
        task_dim: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        config = transformer.config
        if config.in_channels != 2 * config.out_channels:
            raise ValueError(
                f"EditTransformer needs in_channels = 2 x out_channels (noisy latent + condition), got "
                f"{config.in_channels} and {config.out_channels}; build it with EditTransformer.from_t2v"
            )
        tasks = tuple(tasks)
        if not tasks or tasks[0] != NO_TASK or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must be distinct names starting with {NO_TASK!r}, got {list(tasks)}")
        if task_tokens < 1:
            raise ValueError(f"task_tokens must be >= 1, got {task_tokens}")
        self.transformer = transformer
        self.tasks = tasks
        self.task_tokens = int(task_tokens)
        hidden = config.hidden_size
        dim = int(task_dim or hidden)
        rng = np.random.default_rng(seed)
        self.embedding = Parameter(
            Tensor(rng.standard_normal((len(tasks), dim)).astype(np.float32)), name="embedding"
        )
        self.tokens = mint.nn.Linear(dim, self.task_tokens * hidden, bias=False)
        self.tokens.weight.set_data(
            Tensor((rng.standard_normal(self.tokens.weight.shape) * config.init_std).astype(np.float32))
        )
        self.time = mint.nn.Linear(dim, hidden, bias=False)
        self.time.weight.set_data(Tensor(np.zeros(self.time.weight.shape, np.float32)))

    @property
    def latent_channels(self) -> int:
        return self.transformer.config.out_channels

    def task_index(self, name: str) -> int:
        if name not in self.tasks:
            raise ValueError(f"unknown editing task {name!r}; this model knows {list(self.tasks)}")
        return self.tasks.index(name)

    def construct(
        self,
        latents: Tensor,
        timesteps: Tensor,
        text_embs: tuple[Tensor, ...],
        text_masks: tuple[Tensor, ...] | None,
        condition: Tensor,
        task: Tensor,
    ) -> Tensor:
        if condition.shape != latents.shape:
            raise ValueError(
                f"EditTransformer: the condition latent must have the noisy latent's shape {latents.shape}, "
                f"got {condition.shape}"
            )
        batch = latents.shape[0]
        if task.shape != (batch,):
            raise ValueError(
                f"EditTransformer: task must be ({batch},), one index per sample, got {task.shape}"
            )
        embedded = ops.gather(self.embedding, task.astype(ms.int32), 0)
        keep = (task != 0).astype(ms.float32).reshape(batch, 1)
        tokens = self.tokens(embedded).reshape(batch, self.task_tokens, -1)
        mask = ops.broadcast_to(keep, (batch, self.task_tokens))
        offset = self.time(embedded) * keep
        x = mint.cat([latents, condition.astype(latents.dtype)], 1)
        return self.transformer(x, timesteps, text_embs, text_masks, tokens, mask, offset)

    # --- folders ----------------------------------------------------------------------------------------

    @classmethod
    def from_t2v(
        cls,
        t2v: MovieGenTransformer | str | os.PathLike,
        tasks: Sequence[str] = DEFAULT_TASKS,
        task_tokens: int = 4,
        seed: int = 0,
    ) -> EditTransformer:
        """The edit model starting from a T2V model (or its folder): same weights, condition columns zero."""
        if not isinstance(t2v, MovieGenTransformer):
            t2v = MovieGenTransformer.from_pretrained(t2v)
        config = t2v.config
        data = {**config.to_dict(), "in_channels": 2 * config.in_channels}
        edit = MovieGenTransformer(
            TransformerConfig.from_dict(data, source="EditTransformer.from_t2v"), init=False
        )
        source = dict(t2v.parameters_and_names())
        for name, param in edit.parameters_and_names():
            value = source[name].asnumpy()
            if name == "patch_embed.weight":  # (hidden, C pt ph pw): the condition's columns come after
                value = np.concatenate([value, np.zeros_like(value)], axis=1)
            param.set_data(Tensor(value))
        return cls(edit, tasks, task_tokens, seed=seed)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the folder of the module docstring; it appears whole."""
        directory = Path(directory)
        tensors = {name: param.asnumpy() for name, param in self.task_parameters().items()}
        with atomic_dir(directory, replaces=FOLDER_ENTRIES) as tmp:
            self.transformer.save_pretrained(tmp / TRANSFORMER_DIR)
            write_edit_parts(tmp, self.tasks, self.task_tokens, tensors)
        return directory

    def task_parameters(self) -> dict[str, Parameter]:
        """The edit model's own parameters (not the transformer's), by their names in the folder."""
        params = dict(self.parameters_and_names())
        return {key: params[name] for key, name in TASK_TENSORS.items()}

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> EditTransformer:
        directory = Path(directory)
        for name in FOLDER_ENTRIES:
            if not (directory / name).exists():
                raise FileNotFoundError(
                    f"{directory / name}: missing; an edit folder holds {TRANSFORMER_DIR}/, {TASK_FILE} and "
                    f"{INFO_FILE} (EditTransformer.save_pretrained)"
                )
        info = json.loads((directory / INFO_FILE).read_text())
        saved = load_file(str(directory / TASK_FILE))
        model = cls(
            MovieGenTransformer.from_pretrained(directory / TRANSFORMER_DIR),
            info["tasks"],
            info["task_tokens"],
            task_dim=saved["embedding.weight"].shape[1],
        )
        for name, value in model.read_task_parameters(directory / TASK_FILE).items():
            model.task_parameters()[name].set_data(Tensor(value))
        return model

    def read_task_parameters(self, path: str | os.PathLike) -> dict[str, np.ndarray]:
        """The tensors of a `task_embedding.safetensors`, checked against this model's names and shapes."""
        saved = load_file(str(path))
        params = self.task_parameters()
        if saved.keys() != params.keys():
            raise ValueError(f"{path}: tensors {sorted(saved)}, expected {sorted(params)}")
        for name, value in saved.items():
            if tuple(value.shape) != tuple(params[name].shape):
                raise ValueError(
                    f"{path}: {name} has shape {value.shape}, the model needs {tuple(params[name].shape)}"
                )
        return {name: value.astype(np.float32) for name, value in saved.items()}
