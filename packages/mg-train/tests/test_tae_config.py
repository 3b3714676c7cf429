"""The bundled TAE configs validate, follow the reference recipe, and float fields take exponent literals."""

from __future__ import annotations

import pytest

from mg_train.cli import build_parser, parse_config
from mg_train.config.loader import bundled_configs, load_config
from mg_train.config.schema import TAEEvalConfig, TAETrainConfig
from mg_train.tae_train import tae_config

TAE_CONFIGS = [name for name in bundled_configs() if name.startswith("tae/")]


def test_the_expected_tae_configs_are_bundled():
    assert set(TAE_CONFIGS) >= {
        "tae/tiny_cpu",
        "tae/sd35_256px_32f",
        "tae/sd35_256px_16f",
        "tae/eval_256px_32f",
    }


@pytest.mark.parametrize("name", TAE_CONFIGS)
def test_every_bundled_tae_config_validates(name):
    cls = TAEEvalConfig if "eval" in name.split("/")[-1] else TAETrainConfig
    cfg = load_config(cls, name)
    assert isinstance(cfg, cls)
    if cls is TAETrainConfig and not cfg.model.pretrained:
        tae_config(cfg.model)  # the model section builds a valid TAEConfig


def test_reference_recipe_values():
    cfg = load_config(TAETrainConfig, "tae/sd35_256px_32f")
    assert (cfg.data.frames, cfg.data.size, cfg.data.batch_size) == (32, (256, 256), 1)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.schedule, cfg.optim.grad_clip) == (
        1e-5,
        0.0,
        "constant",
        1.0,
    )
    assert (cfg.loss.kl_weight, cfg.loss.perceptual_weight, cfg.loss.opl_weight) == (1e-6, 1.0, 0.0)
    assert cfg.data.image_ratio == 0.2 and cfg.train.gradient_checkpointing and cfg.model.pretrained
    short = load_config(TAETrainConfig, "tae/sd35_256px_16f")
    assert short.data.frames == 16 and short.train.precision == "fp32"
    assert short.optim.lr == cfg.optim.lr and short.loss == cfg.loss
    evaluation = load_config(TAEEvalConfig, "tae/eval_256px_32f")
    assert (evaluation.frames, evaluation.size, evaluation.quantize) == (32, (256, 256), True)


def test_float_fields_take_exponent_literals():
    cfg = load_config(TAETrainConfig, None, ["optim.lr=1e-4", "loss.kl_weight=3E-6", "optim.eps=-1e+2"])
    assert (cfg.optim.lr, cfg.loss.kl_weight, cfg.optim.eps) == (1e-4, 3e-6, -100.0)
    args = build_parser().parse_args(["tae-train", "--optim.lr", "2e-5", "--optim.min_lr", "1e-7"])
    cfg = parse_config("tae-train", args)
    assert (cfg.optim.lr, cfg.optim.min_lr) == (2e-5, 1e-7)
