"""Reading and writing Hugging Face model folders: `config.json`, single or sharded safetensors, atomic writes.

Safetensors files are read through our own small header parser over a memory map, so bfloat16 checkpoints
(which `safetensors.numpy` cannot return) load too, one tensor at a time, as float32.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from mg_transformer._atomic import atomic_file, write_text

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
CONFIG = "config.json"

_NUMPY_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to float32 by `SafetensorsFile.get`
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class SafetensorsFile:
    """One `.safetensors` file: its tensor names, shapes and (lazily read) values."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(
                    f"{self.path}: not a safetensors file (shorter than its 8-byte header length)"
                )
            (header_len,) = struct.unpack("<Q", head)
            if header_len > size - 8:
                raise ValueError(
                    f"{self.path}: not a safetensors file (header length {header_len} > file size)"
                )
            try:
                header = json.loads(f.read(header_len))
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}: not a safetensors file (header is not JSON: {err})") from err
        self.metadata = header.pop("__metadata__", None) or {}
        self._entries: dict[str, dict] = header
        self._data_start = 8 + header_len
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            if entry["dtype"] not in _NUMPY_DTYPES:
                raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {entry['dtype']!r}")
            if self._data_start + end > size:
                raise ValueError(
                    f"{self.path}: tensor {name!r} lies past the end of the file (truncated file?)"
                )
            expected = int(np.prod(entry["shape"], dtype=np.int64)) * _NUMPY_DTYPES[entry["dtype"]].itemsize
            if end - begin != expected:
                raise ValueError(
                    f"{self.path}: tensor {name!r} has {end - begin} bytes, its shape needs {expected}"
                )
        self._map = np.memmap(self.path, dtype=np.uint8, mode="r") if size > 0 else None

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entries[name]["shape"])

    def get(self, name: str, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """The tensor `name` as a new array of `dtype` (floating tensors, bfloat16 included, are converted)."""
        entry = self._entries[name]
        begin, end = entry["data_offsets"]
        raw = self._map[self._data_start + begin : self._data_start + end]
        if entry["dtype"] == "BF16":
            values = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            values = raw.view(_NUMPY_DTYPES[entry["dtype"]])
        return values.reshape(entry["shape"]).astype(dtype)


class HFWeights:
    """The weights of a Hugging Face model folder: `model.safetensors` or a sharded `model.safetensors.index.json`."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        index = self.folder / SAFETENSORS_INDEX
        single = self.folder / SAFETENSORS
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, str] = {}
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(
                    f"{index}: expected JSON with a 'weight_map' of tensor name -> shard file"
                ) from err
            for shard in sorted(set(weight_map.values())):
                if not (self.folder / shard).is_file():
                    raise FileNotFoundError(
                        f"{index} names shard {shard!r}, which is missing from {self.folder}"
                    )
                self._files[shard] = SafetensorsFile(self.folder / shard)
            for name, shard in weight_map.items():
                if name not in self._files[shard]:
                    raise ValueError(f"{index} places {name!r} in {shard!r}, but that shard does not hold it")
                self._where[name] = shard
        elif single.is_file():
            self._files[SAFETENSORS] = SafetensorsFile(single)
            self._where = dict.fromkeys(self._files[SAFETENSORS].keys(), SAFETENSORS)
        else:
            found = sorted(p.name for p in self.folder.glob("*.bin")) if self.folder.is_dir() else []
            hint = (
                f" It has PyTorch pickles ({', '.join(found)}), which we do not read: re-save the model with "
                "`save_pretrained(folder, safe_serialization=True)` in `transformers` to get safetensors."
                if found
                else ""
            )
            raise FileNotFoundError(f"{self.folder}: no {SAFETENSORS} or {SAFETENSORS_INDEX}.{hint}")

    def keys(self) -> list[str]:
        return list(self._where)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def file_of(self, name: str) -> Path:
        return self._files[self._where[name]].path

    def shape(self, name: str) -> tuple[int, ...]:
        return self._files[self._where[name]].shape(name)

    def get(self, name: str, dtype: np.dtype | type = np.float32) -> np.ndarray:
        return self._files[self._where[name]].get(name, dtype)


def read_config(folder: str | os.PathLike) -> dict:
    """The parsed `config.json` of a model folder, with errors that name the folder."""
    path = Path(folder) / CONFIG
    if not Path(folder).is_dir():
        raise FileNotFoundError(
            f"{folder}: not a folder (expected a Hugging Face model folder with {CONFIG})"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {CONFIG} (expected a Hugging Face model folder)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return config


def write_json(path: str | os.PathLike, data: Mapping) -> None:
    """Write `data` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_hf_folder(cell, names: Mapping[str, str], folder: str | os.PathLike, config: Mapping) -> None:
    """Write `cell`'s parameters under their Hugging Face keys (`names`: parameter path -> key) as float32
    `model.safetensors`, and `config` as `config.json`, into `folder` (each file atomically)."""
    params = dict(cell.parameters_and_names())
    tensors = {hf: params[ours].asnumpy().astype(np.float32) for ours, hf in names.items()}
    write_safetensors(os.path.join(folder, SAFETENSORS), tensors)
    write_json(os.path.join(folder, CONFIG), config)


def write_safetensors(path: str | os.PathLike, tensors: Mapping[str, np.ndarray]) -> None:
    """Write numpy tensors to a safetensors file, atomically."""
    from safetensors.numpy import save_file

    with atomic_file(path) as tmp:
        save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata={"format": "np"}
        )


def load_weights_into(
    cell,
    weights: HFWeights,
    names: Mapping[str, str],
    *,
    owned_prefixes: tuple[str, ...],
    ignored: tuple[str, ...] = (),
    strict: bool = True,
) -> None:
    """Copy checkpoint tensors into `cell`'s parameters.

    `names` maps each parameter path of the cell to its checkpoint key. Keys that start with one of
    `owned_prefixes` belong to this model: with `strict`, any of them that is not used (and not in `ignored`)
    is an error, as is any parameter without a key. Shapes must match exactly. Other keys (a decoder, a vision
    tower) are skipped.
    """
    import mindspore as ms

    params = dict(cell.parameters_and_names())
    missing = [hf for ours, hf in names.items() if hf not in weights]
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise KeyError(f"{weights.folder}: checkpoint lacks {len(missing)} tensors this model needs: {shown}")
    if strict:
        used = set(names.values())
        unexpected = [
            k for k in weights if k.startswith(owned_prefixes) and k not in used and k not in ignored
        ]
        if unexpected:
            shown = ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else "")
            raise KeyError(
                f"{weights.folder}: checkpoint has {len(unexpected)} tensors this model does not use: {shown} "
                "(does config.json describe these weights? pass strict=False to ignore them)"
            )
    for ours, hf in names.items():
        param = params[ours]
        if weights.shape(hf) != tuple(param.shape):
            raise ValueError(
                f"{weights.file_of(hf)}: tensor {hf!r} has shape {weights.shape(hf)}, "
                f"the model built from config.json expects {tuple(param.shape)}"
            )
        param.set_data(ms.Tensor(weights.get(hf, np.float32), dtype=param.dtype))
