"""The mg-train command: every config field is documented in --help, and bad configs fail before any work."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from mg_train.cli import COMMANDS, build_parser, leaf_fields, main, parse_config
from mg_train.config.schema import SampleConfig, TransformerTrainConfig


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_every_field_with_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for key, _, _, help_text in leaf_fields(COMMANDS[command][0]):
        assert f"--{key}" in text
        assert " ".join(help_text.split())[:40] in text


def test_flags_overrides_and_file_combine(tmp_path):
    cfg_file = tmp_path / "t.yaml"
    cfg_file.write_text("optim:\n  lr: 0.5\ntrain:\n  steps: 7\n")
    args = build_parser().parse_args(
        ["train", "--config", str(cfg_file), "optim.lr=0.25", "--train.steps", "9", "--data.size", "32", "48"]
    )
    cfg = parse_config("train", args)
    assert isinstance(cfg, TransformerTrainConfig)
    assert (cfg.optim.lr, cfg.train.steps, cfg.data.size) == (0.25, 9, (32, 48))


def test_string_flags_stay_strings():
    args = build_parser().parse_args(
        ["sample", "--prompts", "yes", "null", "a red circle: moving", "--seed", "4"]
    )
    cfg = parse_config("sample", args)
    assert isinstance(cfg, SampleConfig)
    assert cfg.prompts == ["yes", "null", "a red circle: moving"] and cfg.seed == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "optim.lrr=1"], "unknown key 'optim.lrr'; did you mean 'optim.lr'"),
        (["train", "--train.steps", "many"], "'train.steps' must be an integer"),
        (["train", "--config", "no-such-config"], "neither a file nor a bundled config"),
    ],
)
def test_config_errors_exit_2_before_any_work(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_every_field_has_help():
    for cls, _, _ in COMMANDS.values():
        for key, _, _, help_text in leaf_fields(cls):
            assert help_text, f"{cls.__name__}.{key} has no help text"


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "mg_train", "--help"], capture_output=True, text=True, check=True
    )
    for command in COMMANDS:
        assert command in out.stdout


def test_dataclass_defaults_are_independent():
    a, b = SampleConfig(), SampleConfig()
    a.prompts.append("x")
    assert b.prompts == [] and dataclasses.fields(SampleConfig)
