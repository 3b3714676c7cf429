"""Sharded state on disk: every rank writes only the pieces it holds; any layout reads them back.

A tensor of the model (a parameter, an optimizer moment, an EMA shadow) is described by a `ShardSpec`: its full
shape and dtype, the tensor-parallel cut (dim and axes, `TensorShard`) and the ZeRO cut of the flattened
tensor-parallel slice (axes, `FlatShard`), exactly as mg-parallel's styles record them on a Parameter. Under a
`ParallelLayout` that spec says which piece every rank holds, so:

- `write_part` writes this rank's pieces, skipping those another rank of the same replica set writes (the one
  with coordinate 0 on every axis the tensor is replicated over), one tensor at a time;
- `PartReader.full(key)` rebuilds one full tensor from the pieces of any saved layout, reading one piece per
  shard (safetensors reads them without loading the rest of the file);
- `PartReader.local(key, param, ctx)` gives this rank's piece for the current layout: read directly when the
  saved layout cuts it the same way, else rebuilt and re-cut (resharding), one tensor at a time.

Nothing here communicates or knows the model; mg-train decides the file names, the manifest and when to write.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mindspore import Parameter

from mg_parallel.checkpoint import FLAT_SHARD_ATTR, TENSOR_SHARD_ATTR, FlatShard, TensorShard, flat_chunk
from mg_parallel.groups import AXES, ParallelLayout
from mg_parallel.safetensors_io import TensorSpec, write_safetensors


@dataclass(frozen=True)
class ShardSpec:
    """How one tensor is cut over a layout: tensor-parallel dim/axes and ZeRO flat axes (None when uncut)."""

    full_shape: tuple[int, ...]
    dtype: str
    tensor_dim: int | None = None
    tensor_axes: tuple[str, ...] = ()
    flat_axes: tuple[str, ...] = ()

    @classmethod
    def of(cls, layout_param: Parameter, dtype: np.dtype | str | None = None) -> ShardSpec:
        """The spec of a tensor laid out like `layout_param` (the parameter itself or its optimizer state)."""
        tensor: TensorShard | None = getattr(layout_param, TENSOR_SHARD_ATTR, None)
        flat: FlatShard | None = getattr(layout_param, FLAT_SHARD_ATTR, None)
        local = tuple(flat.shape) if flat is not None else tuple(layout_param.shape)
        full = tuple(tensor.full_shape) if tensor is not None else local
        import mindspore as ms

        dtype = np.dtype(dtype) if dtype is not None else np.dtype(ms.dtype_to_nptype(layout_param.dtype))
        return cls(
            full_shape=full,
            dtype=dtype.name,
            tensor_dim=tensor.dim if tensor is not None else None,
            tensor_axes=tuple(tensor.axes) if tensor is not None else (),
            flat_axes=tuple(flat.axes) if flat is not None else (),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "full_shape": list(self.full_shape),
            "dtype": self.dtype,
            "tensor_dim": self.tensor_dim,
            "tensor_axes": list(self.tensor_axes),
            "flat_axes": list(self.flat_axes),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardSpec:
        return cls(
            full_shape=tuple(int(v) for v in data["full_shape"]),
            dtype=str(data["dtype"]),
            tensor_dim=None if data.get("tensor_dim") is None else int(data["tensor_dim"]),
            tensor_axes=tuple(data.get("tensor_axes", ())),
            flat_axes=tuple(data.get("flat_axes", ())),
        )

    # -- geometry under a layout -------------------------------------------------------------------------------

    def tensor_parts(self, layout: ParallelLayout) -> int:
        return layout.degree(self.tensor_axes) if self.tensor_axes else 1

    def flat_parts(self, layout: ParallelLayout) -> int:
        return layout.degree(self.flat_axes) if self.flat_axes else 1

    def local_shape(self, layout: ParallelLayout) -> tuple[int, ...]:
        """Shape of one tensor-parallel slice (before ZeRO flattening)."""
        shape = list(self.full_shape)
        if self.tensor_dim is not None:
            shape[self.tensor_dim] //= self.tensor_parts(layout)
        return tuple(shape)

    def piece_shape(self, layout: ParallelLayout) -> tuple[int, ...]:
        """Shape of the piece a rank holds."""
        local = self.local_shape(layout)
        if not self.flat_axes:
            return local
        return (-(-math.prod(local) // self.flat_parts(layout)),)

    def indices(self, layout: ParallelLayout, rank: int) -> tuple[int, int]:
        """(tensor-parallel index, flat index) of the piece `rank` holds."""
        coords = layout.coords(rank)
        return _index(coords, self.tensor_axes, layout), _index(coords, self.flat_axes, layout)

    def writer_rank(self, layout: ParallelLayout, tensor_index: int, flat_index: int) -> int:
        """The rank that writes piece (tensor_index, flat_index): coordinate 0 on every replica axis."""
        coords = dict.fromkeys(AXES, 0)
        coords.update(_coords_of(tensor_index, self.tensor_axes, layout))
        coords.update(_coords_of(flat_index, self.flat_axes, layout))
        return layout.rank_of(coords)

    def writes(self, layout: ParallelLayout, rank: int) -> bool:
        """Whether `rank` is the one rank of its replica set that writes its piece."""
        return self.writer_rank(layout, *self.indices(layout, rank)) == rank

    def cut(self, full: np.ndarray, layout: ParallelLayout, rank: int) -> np.ndarray:
        """The piece of `full` that `rank` holds under `layout`."""
        tensor_index, flat_index = self.indices(layout, rank)
        piece = full
        if self.tensor_dim is not None:
            piece = np.split(piece, self.tensor_parts(layout), axis=self.tensor_dim)[tensor_index]
        if self.flat_axes:
            piece = flat_chunk(np.ascontiguousarray(piece), self.flat_parts(layout), flat_index)
        return np.ascontiguousarray(piece)


def read_piece(handle: Any, name: str, spec: ShardSpec, layout: ParallelLayout, rank: int) -> np.ndarray:
    """The piece `rank` holds of tensor `name` of an open safetensors file of full tensors (`safe_open`),
    reading only the rows it needs: the tensor-parallel slice, and for a ZeRO chunk the rows that cover it."""
    tensor_index, flat_index = spec.indices(layout, rank)
    full = handle.get_slice(name)
    index = [slice(None)] * len(spec.full_shape)
    offset = 0  # first-dim offset of this tensor-parallel slice in the full tensor
    if spec.tensor_dim is not None:
        size = spec.full_shape[spec.tensor_dim] // spec.tensor_parts(layout)
        index[spec.tensor_dim] = slice(tensor_index * size, (tensor_index + 1) * size)
        offset = tensor_index * size if spec.tensor_dim == 0 else 0
    dtype = np.dtype(spec.dtype)
    if not spec.flat_axes:
        return np.ascontiguousarray(full[tuple(index)]).astype(dtype, copy=False)
    local = spec.local_shape(layout)
    numel = math.prod(local)
    chunk = -(-numel // spec.flat_parts(layout))
    start, stop = flat_index * chunk, min(numel, (flat_index + 1) * chunk)
    out = np.zeros(chunk, dtype)
    if start >= stop:
        return out
    row = math.prod(local[1:]) if len(local) > 1 else 1
    first, last = start // row, -(-stop // row)
    index[0] = slice(offset + first, offset + last) if len(local) > 0 else index[0]
    rows = np.ascontiguousarray(full[tuple(index)] if local else full[()]).reshape(-1)
    out[: stop - start] = rows[start - first * row : stop - first * row]
    return out


def _index(coords: Mapping[str, int], axes: Sequence[str], layout: ParallelLayout) -> int:
    index = 0
    for axis in (a for a in AXES if a in axes):  # row-major in canonical order, as groups are
        index = index * getattr(layout, axis) + coords[axis]
    return index


def _coords_of(index: int, axes: Sequence[str], layout: ParallelLayout) -> dict[str, int]:
    out = {}
    for axis in reversed([a for a in AXES if a in axes]):
        degree = getattr(layout, axis)
        out[axis] = index % degree
        index //= degree
    return out


def write_part(
    path: str | os.PathLike,
    entries: Sequence[tuple[str, ShardSpec, Callable[[], np.ndarray]]],
    layout: ParallelLayout,
    rank: int,
    check_finite: bool = True,
) -> dict[str, Any]:
    """Write the pieces of `entries` (key, spec, read the local piece) that this rank writes, one at a time.

    Returns {"sha256", "keys": [...], "finite": bool}: with `check_finite`, `finite` is False when a written
    piece holds NaN or inf (the caller decides, with every rank, whether the checkpoint may be kept).
    """
    mine = [(key, spec, read) for key, spec, read in entries if spec.writes(layout, rank)]
    readers = {key: read for key, _, read in mine}
    finite = True

    def fetch(key: str) -> np.ndarray:
        nonlocal finite
        array = np.asarray(readers[key]())
        if check_finite and array.dtype.kind == "f" and not np.isfinite(array).all():
            finite = False
        return array

    specs = [TensorSpec(key, spec.piece_shape(layout), np.dtype(spec.dtype)) for key, spec, _ in mine]
    digest = write_safetensors(path, specs, fetch, metadata={"format": "mg-sharded", "rank": str(rank)})
    return {"sha256": digest, "keys": [key for key, _, _ in mine], "finite": finite}


class PartReader:
    """Read tensors of a sharded save: `parts` maps saved rank -> part file, `specs` key -> ShardSpec, `layout`
    the saved layout. Keeps the files open (safetensors memory-maps them) until `close`."""

    def __init__(
        self, parts: Mapping[int, str | os.PathLike], specs: Mapping[str, ShardSpec], layout: ParallelLayout
    ):
        from safetensors import safe_open

        self.specs, self.layout = dict(specs), layout
        self._stack = ExitStack()
        self._files = {
            int(rank): self._stack.enter_context(safe_open(str(Path(path)), framework="np"))
            for rank, path in parts.items()
        }

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> PartReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def piece(self, key: str, tensor_index: int, flat_index: int) -> np.ndarray:
        spec = self.specs[key]
        rank = spec.writer_rank(self.layout, tensor_index, flat_index)
        if rank not in self._files:
            raise FileNotFoundError(f"{key}: the part of saved rank {rank} is missing")
        return self._files[rank].get_tensor(key)

    def full(self, key: str) -> np.ndarray:
        """The full tensor `key`, rebuilt from its pieces."""
        spec = self.specs[key]
        local_shape = spec.local_shape(self.layout)
        slices = []
        for t in range(spec.tensor_parts(self.layout)):
            if spec.flat_axes:
                flat = np.concatenate([self.piece(key, t, f) for f in range(spec.flat_parts(self.layout))])
                slices.append(flat[: math.prod(local_shape)].reshape(local_shape))
            else:
                slices.append(self.piece(key, t, 0))
        full = np.concatenate(slices, axis=spec.tensor_dim) if spec.tensor_dim is not None else slices[0]
        return full.astype(np.dtype(spec.dtype), copy=False)

    def local(self, key: str, target: ShardSpec, layout: ParallelLayout, rank: int) -> np.ndarray:
        """The piece `rank` holds under `layout` for a tensor cut as `target`: read as is when the saved cut
        is the same, else rebuilt from the saved pieces and cut again."""
        saved = self.specs[key]
        if saved.full_shape != target.full_shape:
            raise ValueError(f"{key}: saved with shape {saved.full_shape}, the model has {target.full_shape}")
        # A piece's content depends only on the cut (dim, number of tensor slices, number of flat chunks) and
        # its indices, not on which axes produced them: equal cuts read the piece as it is.
        same = (
            saved.tensor_dim == target.tensor_dim
            and saved.tensor_parts(self.layout) == target.tensor_parts(layout)
            and bool(saved.flat_axes) == bool(target.flat_axes)
            and saved.flat_parts(self.layout) == target.flat_parts(layout)
        )
        dtype = np.dtype(target.dtype)
        if same:
            return self.piece(key, *target.indices(layout, rank)).astype(dtype, copy=False)
        return target.cut(self.full(key).astype(dtype, copy=False), layout, rank)


def keys_in(parts: Iterable[Mapping[str, Any]]) -> set[str]:
    return {key for part in parts for key in part.get("keys", [])}
