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


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory) -> Path:
    from mg_train.testing import tiny_random_pipeline

    path = tmp_path_factory.mktemp("run") / "pipeline"
    tiny_random_pipeline(seed=0, frames=FRAMES, size=SIZE).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def reference(pipeline_dir):
    """A pipeline loaded on its own from the same folder: what the demo's answers must equal."""
    from mg_train.pipeline import MovieGenPipeline

    return MovieGenPipeline.from_pretrained(pipeline_dir, jit=False)


@pytest.fixture(scope="session")
def server(pipeline_dir, tmp_path_factory):
    """The demo serving the tiny pipeline, started exactly as a user would (eager mode for exact equality
    with the reference pipeline)."""
    cwd = tmp_path_factory.mktemp("server")
    srv = Server(
        ["--checkpoint", str(pipeline_dir.parent), "--no-jit", "--output-dir", str(cwd / "out")], cwd
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def pt2v_dir(tmp_path_factory) -> Path:
    """A tiny random personalised (PT2V) pipeline on disk."""
    from mg_train.testing import tiny_random_pipeline

    path = tmp_path_factory.mktemp("pt2v") / "pipeline"
    tiny_random_pipeline(seed=0, frames=FRAMES, size=SIZE, personalized=True).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def pt2v_reference(pt2v_dir):
    from mg_train.pipeline import MovieGenPipeline

    return MovieGenPipeline.from_pretrained(pt2v_dir, jit=False)


@pytest.fixture(scope="session")
def pt2v_server(pt2v_dir, tmp_path_factory):
    """The demo serving the PT2V pipeline."""
    cwd = tmp_path_factory.mktemp("pt2v_server")
    srv = Server(["--checkpoint", str(pt2v_dir), "--no-jit", "--output-dir", str(cwd / "out")], cwd)
    yield srv
    srv.stop()


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
    from mg_train.testing import tiny_random_pipeline

    path = tmp_path_factory.mktemp("edit") / "pipeline"
    tiny_random_pipeline(seed=0, frames=FRAMES, size=SIZE, editing=True).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def edit_server(edit_dir, tmp_path_factory):
    """The demo serving the edit pipeline."""
    cwd = tmp_path_factory.mktemp("edit_server")
    srv = Server(["--checkpoint", str(edit_dir), "--no-jit", "--output-dir", str(cwd / "out")], cwd)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def input_videos(tmp_path_factory) -> dict[str, Path]:
    """Two input videos for edits: mg-data synthetic clips at the test pipeline's frames and size."""
    from mg_data import make_synthetic_dataset

    root = tmp_path_factory.mktemp("inputs")
    data = make_synthetic_dataset(root, n=2, size=SIZE[0], num_frames=FRAMES, val_fraction=0.0, seed=1)
    from mg_data import load_manifest

    rows = load_manifest(data.train_manifest).rows
    return {"a": root / rows[0].video, "b": root / rows[1].video}
