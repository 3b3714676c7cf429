"""Sharded state on disk without communication: pieces cut for every rank of a layout, written once per replica
set, rebuild the full tensor exactly and re-cut for any other layout; safetensors files are streamed one tensor
at a time and read back by the safetensors library."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mg_parallel.groups import ParallelLayout
from mg_parallel.safetensors_io import TensorSpec, file_sha256, read_specs, write_safetensors
from mg_parallel.sharded import PartReader, ShardSpec, write_part

LAYOUTS = [
    ParallelLayout(),
    ParallelLayout(dp=2),
    ParallelLayout(dp=2, tp=2),
    ParallelLayout(cp=2, sp=2),
    ParallelLayout(dp=2, cp=2, tp=2),
]
SPECS = {
    "replicated": ShardSpec((6, 5), "float32"),
    "zero": ShardSpec((7, 3), "float32", flat_axes=("dp", "cp", "sp")),
    "tp": ShardSpec((4, 10), "float32", tensor_dim=0, tensor_axes=("tp",)),
    "tp_zero": ShardSpec((6, 10), "float32", tensor_dim=1, tensor_axes=("tp",), flat_axes=("dp", "cp", "sp")),
    "tp0_zero": ShardSpec((8, 3), "float32", tensor_dim=0, tensor_axes=("tp",), flat_axes=("dp", "cp", "sp")),
    "vector_zero": ShardSpec((5,), "float32", flat_axes=("dp", "cp", "sp")),
}


def _save(tmp_path, layout: ParallelLayout, full: dict[str, np.ndarray]) -> dict[int, str]:
    parts = {}
    for rank in range(layout.size):
        entries = [
            (key, spec, lambda k=key, s=spec, r=rank: s.cut(full[k], layout, r))
            for key, spec in SPECS.items()
        ]
        path = tmp_path / f"rank_{rank}.safetensors"
        info = write_part(path, entries, layout, rank)
        assert info["finite"] and info["sha256"] == file_sha256(path)
        parts[rank] = path
    return parts


@pytest.mark.parametrize(("saved", "loaded"), list(itertools.product(LAYOUTS, LAYOUTS)))
def test_pieces_rebuild_the_tensor_and_reshard_to_any_layout(tmp_path, saved, loaded):
    rng = np.random.default_rng(0)
    full = {key: rng.standard_normal(spec.full_shape).astype(np.float32) for key, spec in SPECS.items()}
    parts = _save(tmp_path, saved, full)
    written = sum(len(read_specs(path)) for path in parts.values())
    expected = sum(spec.tensor_parts(saved) * spec.flat_parts(saved) for spec in SPECS.values())
    assert written == expected  # every piece exactly once, replicas not repeated
    with PartReader(parts, SPECS, saved) as reader:
        for key, spec in SPECS.items():
            np.testing.assert_array_equal(reader.full(key), full[key])
            for rank in range(loaded.size):
                np.testing.assert_array_equal(
                    reader.local(key, spec, loaded, rank), spec.cut(full[key], loaded, rank)
                )


def test_flat_pieces_are_zero_padded_chunks_and_non_finite_values_are_reported(tmp_path):
    spec = SPECS["zero"]
    layout = ParallelLayout(dp=2, cp=2)
    full = np.arange(21, dtype=np.float32).reshape(7, 3)
    pieces = [spec.cut(full, layout, rank) for rank in range(4)]
    assert [p.shape for p in pieces] == [(6,)] * 4 and pieces[3].tolist() == [18, 19, 20, 0, 0, 0]
    full[0, 0] = np.nan
    info = write_part(
        tmp_path / "p.safetensors", [("zero", spec, lambda: spec.cut(full, layout, 0))], layout, 0
    )
    assert not info["finite"]


def test_streamed_safetensors_read_back_with_the_library_and_refuse_wrong_arrays(tmp_path):
    from safetensors.numpy import load_file

    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, -2], np.int64)}
    specs = [TensorSpec(k, v.shape, v.dtype) for k, v in arrays.items()]
    calls = []

    def read(name):
        calls.append(name)
        return arrays[name]

    write_safetensors(tmp_path / "x.safetensors", specs, read, metadata={"format": "np"})
    assert calls == ["a", "b"]  # asked one at a time, in order
    back = load_file(str(tmp_path / "x.safetensors"))
    assert back.keys() == arrays.keys() and all(np.array_equal(back[k], arrays[k]) for k in arrays)
    with pytest.raises(ValueError, match=r"a: got float32 \(3, 2\), the header says float32 \(2, 3\)"):
        write_safetensors(tmp_path / "y.safetensors", specs, lambda n: arrays[n].T.copy())
    assert not (tmp_path / "y.safetensors").exists()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_pieces_read_from_a_file_of_full_tensors_equal_the_cut(tmp_path, layout):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    from mg_parallel.sharded import read_piece

    rng = np.random.default_rng(1)
    full = {key: rng.standard_normal(spec.full_shape).astype(np.float32) for key, spec in SPECS.items()}
    save_file(full, str(tmp_path / "full.safetensors"))
    with safe_open(str(tmp_path / "full.safetensors"), framework="np") as handle:
        for key, spec in SPECS.items():
            for rank in range(layout.size):
                np.testing.assert_array_equal(
                    read_piece(handle, key, spec, layout, rank), spec.cut(full[key], layout, rank)
                )
