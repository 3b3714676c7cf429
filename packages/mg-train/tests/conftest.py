"""Fixtures shared by mg-train's test modules; helpers they call live in `mg_train.testing`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from mg_tae.lpips import expected_shapes
from mg_train.testing import make_training_data, tiny_tae_with_motion


@pytest.fixture(scope="session")
def transformer_data(tmp_path_factory):
    """Transformer-training inputs: 10 synthetic clips and 4 images with latent and text caches and a tiny TAE."""
    return make_training_data(tmp_path_factory.mktemp("tf_data"), n=10, num_images=4)


@pytest.fixture(scope="module")
def motion_tae_run(tmp_path_factory):
    """A tae-train style run directory holding `tae/`: a random tiny TAE with non-identity temporal layers."""
    run = tmp_path_factory.mktemp("run")
    tiny_tae_with_motion(seed=3).save_pretrained(run / "tae")
    return run


@pytest.fixture(scope="session")
def lpips_file(tmp_path_factory):
    """(path, weights): random LPIPS VGG16 + lin weights in the real safetensors layout."""
    rng = np.random.default_rng(5)
    weights = {}
    for key, shape in expected_shapes().items():
        scale = 1.0 if key.startswith("lin") else np.sqrt(2.0 / max(1, np.prod(shape[1:])))
        values = rng.uniform(0, 1, shape) if key.startswith("lin") else scale * rng.standard_normal(shape)
        weights[key] = values.astype(np.float32)
    path = tmp_path_factory.mktemp("lpips") / "lpips.safetensors"
    save_file(weights, str(path))
    return path, weights


@pytest.fixture
def run_readme_block():
    """run(starting, cwd): the one block of mg-train's README whose first command starts with `starting`, run as
    written in `cwd` (mg_testing.readme: each command must succeed)."""
    from mg_testing.readme import run_block, shell_blocks

    readme = Path(__file__).resolve().parents[1] / "README.md"

    def run(starting: str, cwd: Path):
        found = [b for b in shell_blocks(readme) if b.commands and b.commands[0].startswith(starting)]
        assert len(found) == 1, f"expected one block starting with {starting!r} in {readme}"
        return run_block(found[0], cwd)

    return run
