"""Checkpoints of `MovieGenTransformer`: `config.json` + `model.safetensors`, written atomically.

Loading resizes the factorised position tables (`pos_embed_t/h/w`) by linear interpolation over the index axis
when the checkpoint's table length differs from the model's (the stage 1 -> 2 -> 3 growth of Movie Gen); every
other shape mismatch is an error that names the key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mindspore as ms
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from mg_transformer._atomic import atomic_dir
from mg_transformer.config import TransformerConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
POSITION_TABLES = ("pos_embed_t", "pos_embed_h", "pos_embed_w")


def state_dict(model: ms.nn.Cell) -> dict[str, np.ndarray]:
    """Parameter name -> float numpy array, names as in the MindSpore cell (e.g. `blocks.0.attn.to_q.weight`)."""
    return {name: param.asnumpy() for name, param in model.parameters_and_names()}


def save_pretrained(model, directory: str | Path) -> Path:
    """Write `model.safetensors` and `config.json` into `directory`; both appear together (a temporary folder
    takes the place of `directory`), so a crash never pairs new weights with an old config. An existing
    `directory` may hold only those two files."""
    directory = Path(directory)
    tensors = {name: np.ascontiguousarray(value) for name, value in state_dict(model).items()}
    with atomic_dir(directory, replaces=(WEIGHTS_NAME, CONFIG_NAME)) as tmp:
        write_model_files(
            tmp, model.config, lambda path, metadata: save_file(tensors, str(path), metadata=metadata)
        )
    return directory


def write_model_files(
    folder: Path, config: TransformerConfig, write_weights: Callable[[Path, dict[str, str]], None]
) -> None:
    """The model-folder format, written into `folder` (a temporary one that becomes the model folder whole):
    the weights through `write_weights(path, metadata)` (a whole state dict in `save_pretrained`, one tensor at
    a time in mg-train's export of a sharded checkpoint), then `config.json`."""
    write_weights(Path(folder) / WEIGHTS_NAME, {"format": "np"})
    config.to_json(Path(folder) / CONFIG_NAME)


def resize_position_table(table: np.ndarray, length: int) -> np.ndarray:
    """Resample an (n, D) table to (length, D): row i of the result is the linear interpolation of the old
    table at fractional index i * (n - 1) / (length - 1), so the first and last rows are kept."""
    old = table.shape[0]
    if old == length:
        return table
    if old == 1 or length == 1:
        return np.repeat(table[:1], length, axis=0)
    position = np.arange(length, dtype=np.float64) * (old - 1) / (length - 1)
    low = np.minimum(np.floor(position).astype(np.int64), old - 2)
    frac = (position - low)[:, None]
    resized = table[low].astype(np.float64) * (1.0 - frac) + table[low + 1].astype(np.float64) * frac
    return resized.astype(table.dtype)


def load_state_dict(model, tensors: dict[str, np.ndarray], strict: bool = True, source: str = "state dict"):
    """Copy `tensors` into `model`'s parameters; returns (missing, unexpected) key lists.

    Position tables of another length are resized. With `strict`, missing or unexpected keys raise; a shape
    mismatch on any other key always raises. Nothing is modified unless every check passes.
    """
    params = dict(model.parameters_and_names())
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    if strict and (missing or unexpected):
        raise ValueError(
            f"{source}: missing keys {missing[:10]}, unexpected keys {unexpected[:10]} (strict=True)"
        )
    updates = {}
    for name in sorted(set(params) & set(tensors)):
        value = np.asarray(tensors[name])
        shape = tuple(params[name].shape)
        if name in POSITION_TABLES and value.ndim == 2 and value.shape[1] == shape[1]:
            value = resize_position_table(value, shape[0])
        if value.shape != shape:
            raise ValueError(f"{source}: {name} has shape {value.shape}, the model expects {shape}")
        updates[name] = value.astype(np.float32)
    for name, value in updates.items():
        params[name].set_data(ms.Tensor(value))
    return missing, unexpected


def load_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays (float16/bfloat16 stay as stored; loading upcasts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such weights file (expected {WEIGHTS_NAME} from save_pretrained)"
        )
    try:
        with safe_open(str(path), framework="np") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (handles are not dicts)
    except Exception as error:
        raise ValueError(f"{path}: not a readable safetensors file ({error})") from error


def from_pretrained(directory: str | Path, strict: bool = True, **overrides):
    """Build a `MovieGenTransformer` from `directory` (config.json + model.safetensors).

    `overrides` replace config fields before the model is built, e.g. `pos_embed_max_size=(32, 73, 73)` to
    continue a smaller-stage checkpoint at a larger size, or `attention_backend="plain"`.
    """
    from mg_transformer.model import MovieGenTransformer

    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"{config_path}: no such file (expected a directory written by save_pretrained)"
        )
    config = TransformerConfig.from_json(config_path)
    if overrides:
        config = TransformerConfig.from_dict(
            {**config.to_dict(), **overrides}, source=f"{config_path} + overrides"
        )
    model = MovieGenTransformer(config)
    weights_path = directory / WEIGHTS_NAME
    load_state_dict(model, load_safetensors(weights_path), strict=strict, source=str(weights_path))
    return model
