"""The YAML config loader: types, inheritance, overrides, and errors that name the key before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from mg_train.config.loader import ConfigError, apply_overrides, from_dict, load_config, to_dict


@dataclass
class Optim:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "cosine"] = "constant"


@dataclass
class Run:
    steps: int = 10
    name: str = "run"
    size: list[int] = field(default_factory=lambda: [64, 64])
    resume: str | None = None
    optim: Optim = field(default_factory=Optim)


def test_defaults_file_values_and_overrides_combine(tmp_path):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("steps: 20\noptim:\n  lr: 0.001\n")
    cfg = load_config(Run, cfg_file, ["optim.schedule=cosine", "size=[32, 48]", "resume=null", "steps=30"])
    assert cfg.steps == 30 and cfg.optim.lr == 0.001 and cfg.optim.schedule == "cosine"
    assert cfg.size == [32, 48] and cfg.resume is None and cfg.optim.betas == (0.9, 0.999)
    assert to_dict(cfg)["optim"] == {"lr": 0.001, "betas": [0.9, 0.999], "schedule": "cosine"}


def test_extends_merges_nested_keys(tmp_path):
    (tmp_path / "base.yaml").write_text("steps: 5\noptim:\n  lr: 0.5\n  schedule: cosine\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\noptim:\n  lr: 0.25\n")
    cfg = load_config(Run, tmp_path / "child.yaml")
    assert (cfg.steps, cfg.optim.lr, cfg.optim.schedule) == (5, 0.25, "cosine")


def test_unknown_key_names_file_and_dotted_key_with_suggestion(tmp_path):
    cfg_file = tmp_path / "bad.yaml"
    cfg_file.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key 'optim\.lrr'; did you mean 'optim\.lr'"):
        load_config(Run, cfg_file)
    with pytest.raises(ConfigError, match=r"unknown key 'stepz'"):
        load_config(Run, None, ["stepz=3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=ten", "'steps' must be an integer"),
        ("steps=true", "'steps' must be an integer"),
        ("optim.lr=fast", "'optim.lr' must be a number"),
        ("optim.schedule=linear", "'optim.schedule' must be one of 'constant', 'cosine'"),
        ("optim.betas=[0.9]", "'optim.betas' must have 2 items"),
        ("size=64", "'size' must be a list"),
        ("optim=3", "'optim' must be a mapping"),
        ("novalue", "expected KEY=VALUE"),
    ],
)
def test_wrong_types_fail_with_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(Run, None, [override])


def test_ints_are_accepted_for_float_fields_and_strings_are_not_coerced():
    cfg = from_dict(Run, {"optim": {"lr": 1}})
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    with pytest.raises(ConfigError, match="'name' must be a string"):
        from_dict(Run, {"name": 5})


def test_override_parsing_builds_nested_mappings():
    assert apply_overrides({"a": {"b": 1, "c": 2}}, ["a.b=3", "d=[1, 2]"]) == {
        "a": {"b": 3, "c": 2},
        "d": [1, 2],
    }


def test_extends_cycle_and_missing_parent_are_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Run, tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"extends 'missing\.yaml', which does not exist"):
        load_config(Run, tmp_path / "c.yaml")


def test_unknown_config_name_is_reported():
    with pytest.raises(ConfigError, match="neither a file nor a bundled config"):
        load_config(Run, "no/such/config")
