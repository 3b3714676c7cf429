"""TransformerConfig presets, validation, JSON round trip, and count_parameters against instantiated models."""

import json

import pytest

from mg_transformer import MovieGenTransformer, TransformerConfig, count_parameters


@pytest.mark.parametrize(
    "name, layers, hidden, ffn, heads",
    [("1B", 24, 1536, 4096, 16), ("5B", 32, 3072, 8192, 24), ("30B", 48, 6144, 16384, 48)],
)
def test_presets_have_movie_gen_sizes(name, layers, hidden, ffn, heads):
    config = TransformerConfig.preset(name)
    assert (config.num_layers, config.hidden_size, config.ffn_size, config.num_heads) == (
        layers,
        hidden,
        ffn,
        heads,
    )
    assert config.patch_size == (1, 2, 2)
    assert config.in_channels == config.out_channels == 16
    assert config.text_dims == {"ul2": 4096, "byt5": 1472, "metaclip": 1280}


@pytest.mark.parametrize(
    "overrides",
    [{}, {"qk_norm": True, "text_dims": {"metaclip": 40}}, {"patch_size": (2, 1, 2), "out_channels": 8}],
)
def test_count_parameters_equals_instantiated_model(overrides):
    config = TransformerConfig.preset("tiny", **overrides)
    model = MovieGenTransformer(config)
    assert count_parameters(config) == sum(p.size for p in model.get_parameters())


def test_count_parameters_of_the_large_presets():
    counts = {name: count_parameters(TransformerConfig.preset(name)) for name in ("1B", "5B", "30B")}
    print({name: f"{count / 1e9:.3f}B" for name, count in counts.items()})
    # The per-block weights dominate: 8 h^2 (two attentions) + 3 h ffn per layer.
    for name, count in counts.items():
        config = TransformerConfig.preset(name)
        blocks = config.num_layers * (8 * config.hidden_size**2 + 3 * config.hidden_size * config.ffn_size)
        assert blocks < count < 1.05 * blocks
    assert 0.9e9 < counts["1B"] < 1.2e9 and 4e9 < counts["5B"] < 6e9 and 28e9 < counts["30B"] < 33e9


def test_overrides_and_validation_errors():
    config = TransformerConfig.preset("1B", text_dims={"ul2": 64, "byt5": 32}, qk_norm=True)
    assert config.text_encoders == ("ul2", "byt5") and config.qk_norm
    with pytest.raises(ValueError, match="unknown transformer preset '2B'"):
        TransformerConfig.preset("2B")
    with pytest.raises(ValueError, match=r"unknown TransformerConfig field\(s\) \['hidden'\]"):
        TransformerConfig.preset("tiny", hidden=8)
    with pytest.raises(ValueError, match="hidden_size=64: expected a multiple of num_heads=5"):
        TransformerConfig.preset("tiny", num_heads=5)
    with pytest.raises(ValueError, match="text_dims"):
        TransformerConfig.preset("tiny", text_dims={"t5": 32})
    with pytest.raises(ValueError, match="attention_backend"):
        TransformerConfig.preset("tiny", attention_backend="xformers")


def test_json_round_trip_and_bad_files(tmp_path):
    config = TransformerConfig.preset("tiny", qk_norm=True, pos_embed_max_size=(3, 5, 7))
    config.to_json(tmp_path / "config.json")
    assert TransformerConfig.from_json(tmp_path / "config.json") == config
    data = json.loads((tmp_path / "config.json").read_text())
    data["num_blocks"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"bad.json: unknown TransformerConfig key\(s\) \['num_blocks'\]"):
        TransformerConfig.from_json(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        TransformerConfig.from_json(tmp_path / "broken.json")
