"""safetensors files written one tensor at a time, and read one tensor (or a slice of it) at a time.

`write_safetensors(path, specs, read)` lays out the header from the tensors' names, shapes and dtypes first, then
asks `read(name)` for each tensor in turn and appends its bytes, so writing N tensors holds one of them in memory
(a full-model dict of arrays doubles host memory for a large model). The file is written atomically and its
SHA-256 is returned for checksums. The format is the safetensors specification: an 8-byte little-endian header
length, a JSON header (`dtype`, `shape`, `data_offsets` per tensor, `__metadata__`), padded with spaces to a
multiple of 8, then the raw little-endian data. `safetensors.safe_open` reads it, including slices.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mg_parallel._atomic import atomic_file

_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one tensor of a file (known before its data is)."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= int(size)
        return count * np.dtype(self.dtype).itemsize


def write_safetensors(
    path: str | os.PathLike,
    specs: Sequence[TensorSpec],
    read: Callable[[str], np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Write the tensors of `specs` to `path`, fetching each with `read(name)` only when its turn comes.

    Raises ValueError naming the tensor when `read` returns another shape or dtype than its spec (before the
    file becomes visible). Returns the file's SHA-256 (hex).
    """
    header: dict[str, object] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype not in _DTYPES:
            raise ValueError(f"{spec.name}: dtype {dtype} has no safetensors code")
        header[spec.name] = {
            "dtype": _DTYPES[dtype],
            "shape": [int(s) for s in spec.shape],
            "data_offsets": [offset, offset + spec.nbytes],
        }
        offset += spec.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    digest = hashlib.sha256()
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:

        def put(data: bytes) -> None:
            handle.write(data)
            digest.update(data)

        put(struct.pack("<Q", len(text)))
        put(text)
        for spec in specs:
            array = np.asarray(read(spec.name))
            if tuple(array.shape) != tuple(spec.shape) or array.dtype != np.dtype(spec.dtype):
                raise ValueError(
                    f"{spec.name}: got {array.dtype} {tuple(array.shape)}, the header says "
                    f"{np.dtype(spec.dtype)} {tuple(spec.shape)}"
                )
            put(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
            del array
    return digest.hexdigest()


def specs_of(arrays: Mapping[str, np.ndarray]) -> list[TensorSpec]:
    """Specs of arrays already in memory."""
    return [TensorSpec(name, tuple(a.shape), a.dtype) for name, a in arrays.items()]


def file_sha256(path: str | os.PathLike, chunk_mb: int = 16) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_mb << 20):
            digest.update(block)
    return digest.hexdigest()


def read_specs(path: str | os.PathLike) -> list[TensorSpec]:
    """The tensors a safetensors file holds, from its header alone."""
    codes = {code: dtype for dtype, code in _DTYPES.items()}
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return [
        TensorSpec(name, tuple(entry["shape"]), codes[entry["dtype"]])
        for name, entry in header.items()
        if name != "__metadata__"
    ]


def iter_tensors(
    path: str | os.PathLike, names: Iterable[str] | None = None
) -> Iterable[tuple[str, np.ndarray]]:
    """(name, array) of a file's tensors, one at a time."""
    from safetensors import safe_open

    with safe_open(str(Path(path)), framework="np") as handle:
        for name in names if names is not None else handle.keys():
            yield name, handle.get_tensor(name)
