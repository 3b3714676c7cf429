"""Our safetensors reader and weight loading against the `safetensors` library; clear errors on bad folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from mg_transformer.text import HFWeights, SafetensorsFile, T5Encoder, TextEncoder


def test_reader_matches_safetensors_library(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((7,)).astype(np.float16),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        "empty": np.zeros((0, 4), np.float32),
    }
    save_file(tensors, str(tmp_path / "x.safetensors"), metadata={"format": "np"})
    ours = SafetensorsFile(tmp_path / "x.safetensors")
    assert sorted(ours.keys()) == sorted(tensors) and ours.metadata == {"format": "np"}
    for name, value in tensors.items():
        assert ours.shape(name) == value.shape
        np.testing.assert_array_equal(ours.get(name, value.dtype), value)
    np.testing.assert_array_equal(ours.get("f16"), tensors["f16"].astype(np.float32))


def test_bfloat16_is_widened_exactly(torch, tmp_path):
    from safetensors.torch import save_file as save_torch

    values = torch.randn(4, 9).to(torch.bfloat16)
    save_torch({"w": values}, str(tmp_path / "b.safetensors"))
    np.testing.assert_array_equal(
        SafetensorsFile(tmp_path / "b.safetensors").get("w"), values.float().numpy()
    )


def test_damaged_files_are_named(tmp_path):
    save_file({"a": np.ones((64,), np.float32)}, str(tmp_path / "ok.safetensors"))
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-8])
    with pytest.raises(ValueError, match=r"cut\.safetensors: tensor 'a' lies past the end"):
        SafetensorsFile(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match=r"junk\.safetensors: not a safetensors file"):
        SafetensorsFile(tmp_path / "junk.safetensors")


def test_weight_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        HFWeights(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.bin.*safe_serialization=True"):
        HFWeights(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "gone.safetensors"}})
    )
    with pytest.raises(FileNotFoundError, match=r"names shard 'gone\.safetensors'"):
        HFWeights(tmp_path)


@pytest.fixture
def saved_tiny(tmp_path):
    TextEncoder.preset("byt5", "tiny").save_pretrained(tmp_path)
    return tmp_path


def _rewrite(folder, edit):
    from safetensors.numpy import load_file

    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_missing_tensor_is_named(saved_tiny):
    _rewrite(saved_tiny, lambda t: t.pop("encoder.block.1.layer.1.DenseReluDense.wo.weight"))
    with pytest.raises(KeyError, match=r"lacks 1 tensors.*block\.1\.layer\.1\.DenseReluDense\.wo\.weight"):
        T5Encoder.from_pretrained(saved_tiny)


def test_shape_mismatch_is_named(saved_tiny):
    _rewrite(saved_tiny, lambda t: t.update({"encoder.final_layer_norm.weight": np.ones(47, np.float32)}))
    with pytest.raises(
        ValueError, match=r"'encoder\.final_layer_norm\.weight' has shape \(47,\).*expects \(48,\)"
    ):
        T5Encoder.from_pretrained(saved_tiny)


def test_unexpected_tensor_needs_strict_false(saved_tiny):
    _rewrite(saved_tiny, lambda t: t.update({"encoder.block.0.layer.2.extra.weight": np.ones(3, np.float32)}))
    with pytest.raises(KeyError, match=r"does not use: encoder\.block\.0\.layer\.2\.extra\.weight"):
        T5Encoder.from_pretrained(saved_tiny)
    T5Encoder.from_pretrained(saved_tiny, strict=False)
    # weights of other parts of a checkpoint (a decoder, an LM head) never count as unexpected
    _rewrite(
        saved_tiny,
        lambda t: (
            t.pop("encoder.block.0.layer.2.extra.weight"),
            t.update({"lm_head.weight": np.ones(2, np.float32)}),
        ),
    )
    T5Encoder.from_pretrained(saved_tiny)


def test_config_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        T5Encoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ValueError, match=r"config\.json: not valid JSON"):
        T5Encoder.from_pretrained(tmp_path)
