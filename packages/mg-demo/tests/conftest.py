"""Shared fixtures: a tiny random pipeline on disk, a reference pipeline loaded from it, and the real
`python -m mg_demo` server serving it (started once per test session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from mg_demo.testing import FRAMES, SIZE, Server, still


@pytest.fixture(scope="session", autouse=True)
def _mindspore():
    from mg_train.runtime import setup_mindspore

    setup_mindspore()


def _pipeline_on_disk(tmp_path_factory, name: str, **kinds) -> Path:
    """A tiny random pipeline (`mg_train.testing.tiny_random_pipeline(**kinds)`) saved under a new folder."""
    from mg_train.testing import tiny_random_pipeline

    path = tmp_path_factory.mktemp(name) / "pipeline"
    tiny_random_pipeline(seed=0, frames=FRAMES, size=SIZE, **kinds).save_pretrained(path)
    return path


def _serve(checkpoint: Path, tmp_path_factory, name: str):
    """The real `python -m mg_demo` serving `checkpoint` in eager mode (exactly the pipeline's results)."""
    cwd = tmp_path_factory.mktemp(name)
    srv = Server(["--checkpoint", str(checkpoint), "--no-jit", "--output-dir", str(cwd / "out")], cwd)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory) -> Path:
    return _pipeline_on_disk(tmp_path_factory, "run")


@pytest.fixture(scope="session")
def reference(pipeline_dir):
    """A pipeline loaded on its own from the same folder: what the demo's answers must equal."""
    from mg_train.pipeline import MovieGenPipeline

    return MovieGenPipeline.from_pretrained(pipeline_dir, jit=False)


@pytest.fixture(scope="session")
def server(pipeline_dir, tmp_path_factory):
    """The demo serving the tiny pipeline, started exactly as a user would (from its run directory)."""
    yield from _serve(pipeline_dir.parent, tmp_path_factory, "server")


@pytest.fixture(scope="session")
def pt2v_dir(tmp_path_factory) -> Path:
    """A tiny random personalised (PT2V) pipeline on disk."""
    return _pipeline_on_disk(tmp_path_factory, "pt2v", personalized=True)


@pytest.fixture(scope="session")
def pt2v_reference(pt2v_dir):
    from mg_train.pipeline import MovieGenPipeline

    return MovieGenPipeline.from_pretrained(pt2v_dir, jit=False)


@pytest.fixture(scope="session")
def pt2v_server(pt2v_dir, tmp_path_factory):
    """The demo serving the PT2V pipeline."""
    yield from _serve(pt2v_dir, tmp_path_factory, "pt2v_server")


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> dict[str, Path]:
    """Reference images a user would upload: a red and a blue square on grey (`mg_demo.testing.still`)."""
    from mg_data import write_image

    root = tmp_path_factory.mktemp("references")
    paths = {}
    for name, color in (("red", (225, 35, 35)), ("blue", (40, 60, 220))):
        paths[name] = root / f"{name}.png"
        write_image(paths[name], still(color))
    return paths


@pytest.fixture(scope="session")
def edit_dir(tmp_path_factory) -> Path:
    """A tiny random Movie Gen Edit pipeline on disk."""
    return _pipeline_on_disk(tmp_path_factory, "edit", editing=True)


@pytest.fixture(scope="session")
def edit_server(edit_dir, tmp_path_factory):
    """The demo serving the edit pipeline."""
    yield from _serve(edit_dir, tmp_path_factory, "edit_server")


@pytest.fixture(scope="session")
def input_videos(tmp_path_factory) -> dict[str, Path]:
    """Two input videos for edits: mg-data synthetic clips at the test pipeline's frames and size."""
    from mg_data import make_synthetic_dataset

    root = tmp_path_factory.mktemp("inputs")
    data = make_synthetic_dataset(root, n=2, size=SIZE[0], num_frames=FRAMES, val_fraction=0.0, seed=1)
    from mg_data import load_manifest

    rows = load_manifest(data.train_manifest).rows
    return {"a": root / rows[0].video, "b": root / rows[1].video}
