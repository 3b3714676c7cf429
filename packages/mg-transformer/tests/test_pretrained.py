"""save_pretrained / from_pretrained: round trip, strictness, atomic writes and position-table resizing."""

import json

import mindspore as ms
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mg_testing import check_save_load_round_trip
from mg_transformer import MovieGenTransformer, TransformerConfig, resize_position_table
from mg_transformer import pretrained as pretrained_module
from mg_transformer.testing import dummy_inputs, randomize_parameters


def random_model(**overrides):
    model = MovieGenTransformer(TransformerConfig.preset("tiny", **overrides))
    randomize_parameters(model, seed=7, std=0.1)
    return model


def saved_model(tmp_path, **overrides):
    model = random_model(**overrides)
    model.save_pretrained(tmp_path / "ckpt")
    return model, tmp_path / "ckpt"


def test_round_trip_gives_identical_outputs(tmp_path):
    model, directory = random_model(qk_norm=True), tmp_path / "ckpt"
    # parameters by name, config and outputs all exactly equal after loading
    check_save_load_round_trip(model, dummy_inputs(model.config, latent_size=(1, 4, 4)), folder=directory)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((directory / "config.json").read_text())["qk_norm"] is True
    tensors = load_file(str(directory / "model.safetensors"))
    assert set(tensors) == {name for name, _ in model.parameters_and_names()}


def test_strict_loading_names_missing_and_unexpected_keys(tmp_path):
    _model, directory = saved_model(tmp_path)
    tensors = load_file(str(directory / "model.safetensors"))
    before = tensors["proj_out.weight"].copy()
    del tensors["proj_out.weight"]
    tensors["extra.weight"] = np.zeros(3, np.float32)
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(
        ValueError, match=r"missing keys \['proj_out.weight'\], unexpected keys \['extra.weight'\]"
    ):
        MovieGenTransformer.from_pretrained(directory)
    loaded = MovieGenTransformer.from_pretrained(directory, strict=False)
    got = dict(loaded.parameters_and_names())
    np.testing.assert_array_equal(got["patch_embed.weight"].asnumpy(), tensors["patch_embed.weight"])
    assert not np.array_equal(got["proj_out.weight"].asnumpy(), before)  # missing: keeps its fresh init

    tensors = load_file(str(directory / "model.safetensors"))
    tensors["patch_embed.weight"] = np.zeros((3, 3), np.float32)
    save_file(tensors, str(directory / "model.safetensors"))
    with pytest.raises(
        ValueError, match=r"patch_embed.weight has shape \(3, 3\), the model expects \(64, 64\)"
    ):
        MovieGenTransformer.from_pretrained(directory, strict=False)


def test_half_precision_checkpoints_load_as_float32(tmp_path):
    _, directory = saved_model(tmp_path)
    tensors = load_file(str(directory / "model.safetensors"))
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(directory / "model.safetensors"))
    loaded = dict(MovieGenTransformer.from_pretrained(directory).parameters_and_names())
    for name, value in tensors.items():
        assert loaded[name].dtype == ms.float32
        np.testing.assert_array_equal(loaded[name].asnumpy(), value.astype(np.float16).astype(np.float32))


def test_missing_or_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json: no such file"):
        MovieGenTransformer.from_pretrained(tmp_path)
    _, directory = saved_model(tmp_path)
    (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"model\.safetensors: not a readable safetensors file"):
        MovieGenTransformer.from_pretrained(directory)


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, directory = saved_model(tmp_path)
    original = (directory / "model.safetensors").read_bytes()

    def broken_save(tensors, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pretrained_module, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(directory)
    assert (directory / "model.safetensors").read_bytes() == original
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json",
        "model.safetensors",
    ]  # no temp files


def test_resize_position_table_is_linear_interpolation():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((5, 3)).astype(np.float32)
    for length in (5, 9, 3, 1):
        resized = resize_position_table(table, length)
        grid = np.linspace(0, 4, length) if length > 1 else np.zeros(1)
        expected = np.stack([np.interp(grid, np.arange(5), table[:, c]) for c in range(3)], 1)
        np.testing.assert_allclose(resized, expected, atol=1e-6)
    np.testing.assert_array_equal(resize_position_table(table[:1], 4), np.repeat(table[:1], 4, 0))


def test_loading_at_a_larger_size_resizes_position_tables(tmp_path):
    model, directory = saved_model(tmp_path, pos_embed_max_size=(2, 4, 4))
    grown = MovieGenTransformer.from_pretrained(directory, pos_embed_max_size=(4, 8, 7))
    assert grown.config.pos_embed_max_size == (4, 8, 7)
    old, new = dict(model.parameters_and_names()), dict(grown.parameters_and_names())
    for axis, length in zip("thw", (4, 8, 7), strict=True):
        table = old[f"pos_embed_{axis}"].asnumpy()
        grid = np.linspace(0, table.shape[0] - 1, length)
        expected = np.stack([np.interp(grid, np.arange(table.shape[0]), col) for col in table.T], 1)
        np.testing.assert_allclose(new[f"pos_embed_{axis}"].asnumpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(
        new["blocks.1.mlp.up_proj.weight"].asnumpy(), old["blocks.1.mlp.up_proj.weight"]
    )
    # The grown model runs on a grid the old one could not take.
    out = grown(*dummy_inputs(grown.config, batch=1, latent_size=(4, 16, 14)))
    assert out.shape == (1, 16, 4, 16, 14)
