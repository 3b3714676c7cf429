"""Full (unsharded) state of a parallel model: gather for saving, slice for loading.

Styles record on each sharded Parameter how it was cut, so a checkpoint of the plain single-process model
loads into any layout and a parallel model saves back the exact plain checkpoint:
- `mg_tensor_shard` (TensorShard): a tensor-parallel slice along one dim over some axes;
- `mg_flat_shard` (FlatShard): a ZeRO-3 slice of the flattened (zero-padded) tensor over some axes.
A parameter may carry both (ZeRO-3 on top of tensor parallel); the flat shard is undone first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, mint, nn, ops

from mg_parallel._atomic import atomic_file
from mg_parallel.comm import _AllGatherImpl, native_supported
from mg_parallel.groups import Group, ParallelContext, get_parallel_context

TENSOR_SHARD_ATTR = "mg_tensor_shard"
FLAT_SHARD_ATTR = "mg_flat_shard"


@dataclass(frozen=True)
class TensorShard:
    """This parameter is chunk `rank` of `full_shape` split evenly along `dim` over the group of `axes`."""

    dim: int
    axes: tuple[str, ...]
    full_shape: tuple[int, ...]


@dataclass(frozen=True)
class FlatShard:
    """This 1-D parameter is chunk `rank` of the zero-padded flattening of a `shape` tensor over `axes`."""

    axes: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    def chunk(self, n: int) -> int:
        return -(-self.numel // n)


def flat_chunk(array: np.ndarray, n: int, index: int) -> np.ndarray:
    """Chunk `index` of `array` flattened and zero-padded to a multiple of `n`."""
    flat = array.reshape(-1)
    chunk = -(-flat.size // n)
    out = np.zeros(chunk, dtype=array.dtype)
    piece = flat[index * chunk : (index + 1) * chunk]
    out[: piece.size] = piece
    return out


def tensor_chunk(array: np.ndarray, dim: int, n: int, index: int) -> np.ndarray:
    if array.shape[dim] % n:
        raise ValueError(f"dim {dim} of shape {array.shape} is not divisible by {n}")
    return np.split(array, n, axis=dim)[index].copy()


def local_shape(param: Parameter) -> tuple[int, ...]:
    """Shape of the tensor-parallel slice this rank holds (before any ZeRO-3 flattening)."""
    flat = getattr(param, FLAT_SHARD_ATTR, None)
    return tuple(flat.shape) if flat is not None else tuple(param.shape)


def full_shape(param: Parameter) -> tuple[int, ...]:
    tensor = getattr(param, TENSOR_SHARD_ATTR, None)
    return tuple(tensor.full_shape) if tensor is not None else local_shape(param)


class _Gatherers:
    def __init__(self, ctx: ParallelContext):
        self.ctx = ctx
        self.cells: dict[tuple[Group, int], nn.Cell] = {}

    def __call__(self, value: ms.Tensor, axes: tuple[str, ...], dim: int) -> ms.Tensor:
        group = self.ctx.group(axes)
        if group.size == 1:
            return value
        key = (group, dim)
        if key not in self.cells:
            self.cells[key] = _AllGatherImpl(group, dim, native_supported("all_gather", group))
        return self.cells[key](value)


def unshard(
    value: ms.Tensor, param: Parameter, ctx: ParallelContext, gather: _Gatherers | None = None
) -> np.ndarray:
    """Full numpy value of a tensor laid out like `param` (the parameter itself or an optimizer state of it)."""
    gather = gather or _Gatherers(ctx)
    flat = getattr(param, FLAT_SHARD_ATTR, None)
    if flat is not None:
        value = ops.reshape(mint.narrow(gather(value, flat.axes, 0), 0, 0, flat.numel), flat.shape)
    tensor = getattr(param, TENSOR_SHARD_ATTR, None)
    if tensor is not None:
        value = gather(value, tensor.axes, tensor.dim)
    return value.asnumpy().copy()  # asnumpy can share the buffer that optimizer steps update in place


def shard_like(array: np.ndarray, param: Parameter, ctx: ParallelContext) -> np.ndarray:
    """This rank's piece of a full array for a tensor laid out like `param`."""
    tensor = getattr(param, TENSOR_SHARD_ATTR, None)
    if tensor is not None:
        group = ctx.group(tensor.axes)
        array = tensor_chunk(array, tensor.dim, group.size, group.rank)
    flat = getattr(param, FLAT_SHARD_ATTR, None)
    if flat is not None:
        group = ctx.group(flat.axes)
        array = flat_chunk(array, group.size, group.rank)
    return array


def gather_full_state(
    params: nn.Cell | Iterable[Parameter], ctx: ParallelContext | None = None
) -> dict[str, np.ndarray]:
    """Name -> full numpy value of every parameter, on every rank (all ranks must call it: collectives).

    Accepts a Cell (all its parameters, trainable or not) or a parameter list.
    """
    ctx = ctx or get_parallel_context()
    params = params.get_parameters() if isinstance(params, nn.Cell) else params
    gather = _Gatherers(ctx)
    return {p.name: unshard(p.value(), p, ctx, gather) for p in params}


def load_full_state(
    params: nn.Cell | Iterable[Parameter],
    state: Mapping[str, np.ndarray],
    ctx: ParallelContext | None = None,
    strict: bool = True,
    source: str = "state",
) -> list[str]:
    """Load full (plain-model) arrays into possibly sharded parameters; returns the names not found in `state`.

    With `strict`, missing or unexpected keys and shape mismatches raise ValueError naming them.
    """
    ctx = ctx or get_parallel_context()
    params = list(params.get_parameters() if isinstance(params, nn.Cell) else params)
    names = {p.name for p in params}
    missing = [p.name for p in params if p.name not in state]
    unexpected = [k for k in state if k not in names]
    if strict and (missing or unexpected):
        raise ValueError(f"{source}: missing keys {missing[:20]}, unexpected keys {unexpected[:20]}")
    for p in params:
        if p.name not in state:
            continue
        array = np.asarray(state[p.name])
        expected = full_shape(p)
        if tuple(array.shape) != expected:
            raise ValueError(
                f"{source}: {p.name} has shape {tuple(array.shape)}, the model expects {expected}"
            )
        piece = shard_like(array, p, ctx).astype(ms.dtype_to_nptype(p.dtype), copy=False)
        p.set_data(ms.Tensor(piece.reshape(p.shape)))
    return missing


def save_full_checkpoint(
    params: nn.Cell | Iterable[Parameter], path: str | os.PathLike, ctx: ParallelContext | None = None
) -> dict[str, np.ndarray]:
    """Gather the full state and write it on global rank 0 (temp file + rename).

    The format follows the suffix: `.safetensors` or `.ckpt`. Every rank must call it (collectives);
    returns the gathered state on every rank.
    """
    path = Path(path)
    fmt = _format_of(path)
    ctx = ctx or get_parallel_context()
    state = gather_full_state(params, ctx)
    if ctx.rank_id == 0:
        with atomic_file(path) as tmp:  # same suffix: MindSpore insists on it
            ms.save_checkpoint(
                [{"name": k, "data": ms.Tensor(v)} for k, v in state.items()], str(tmp), format=fmt
            )
    return state


def _format_of(path: Path) -> str:
    if path.suffix == ".safetensors":
        return "safetensors"
    if path.suffix == ".ckpt":
        return "ckpt"
    raise ValueError(f"checkpoint {path}: expected a .safetensors or .ckpt file name")


def load_full_checkpoint(
    params: nn.Cell | Iterable[Parameter],
    path: str | os.PathLike,
    ctx: ParallelContext | None = None,
    strict: bool = True,
) -> list[str]:
    """Read a plain-model safetensors (or .ckpt) checkpoint and load it into possibly sharded parameters."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    fmt = _format_of(path)
    loaded = ms.load_checkpoint(str(path), format=fmt)
    state = {k: v.asnumpy().copy() for k, v in loaded.items()}
    return load_full_state(params, state, ctx, strict=strict, source=str(path))
