"""Fixtures for mg-data tests: small synthetic datasets, videos whose frames encode their own index, and caches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mg_data import make_synthetic_dataset, write_video


def _index_frames(num_frames: int, height: int = 32, width: int = 32, offset: int = 0) -> np.ndarray:
    """Frames whose mean brightness encodes the frame index (10 + 12 * i), so a decoded clip tells which
    frames were picked, plus a left-to-right ramp in the red channel so flips and crops are visible."""
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frames[i, :, :, 1] = 10 + 12 * ((i + offset) % 20)
    frames[..., 0] = np.linspace(0, 255, width, dtype=np.float32).astype(np.uint8)[None, None, :]
    frames[..., 2] = 128
    return frames


def _decoded_index(video_cthw: np.ndarray) -> np.ndarray:
    """Invert `index_frames` on a model-layout clip: the frame index of every frame."""
    green = (video_cthw[1] + 1.0) * 127.5  # (T, H, W)
    return np.rint((green.mean(axis=(1, 2)) - 10) / 12).astype(int)


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    """A 64x64 synthetic dataset: 40 clips of 16 frames plus 6 images, one held-out caption."""
    out = tmp_path_factory.mktemp("synth")
    return make_synthetic_dataset(
        out, n=40, seed=3, num_images=6, holdout_captions=["a blue square moving up"]
    )


@pytest.fixture
def index_video(tmp_path):
    """Write an index-encoded mp4 and return (path, frames)."""

    def make(
        name: str = "clip.mp4", num_frames: int = 20, height: int = 32, width: int = 32, fps: float = 10.0
    ):
        frames = _index_frames(num_frames, height, width)
        path = tmp_path / name
        write_video(path, frames, fps=fps, crf=0)
        return path, frames

    return make


def _write_text_cache(
    root: Path,
    entries: dict[str, dict[str, int]],
    dims: dict[str, int],
    max_lengths: dict[str, int],
    seed: int = 0,
):
    """A text cache in the contract's layout (written here from the contract's text, independently of mg_data):
    `entries` maps key -> {encoder: number of real tokens}; returns {encoder: {key: embedding (n, D)}}."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "mg-text-emb",
        "version": 1,
        "encoders": {e: {"dim": dims[e], "max_length": max_lengths[e], "model": "test"} for e in dims},
    }
    (root / "meta.json").write_text(json.dumps(meta))
    written: dict[str, dict[str, np.ndarray]] = {e: {} for e in dims}
    for key, lengths in entries.items():
        for encoder, n in lengths.items():
            emb = rng.standard_normal((n, dims[encoder])).astype(np.float32)
            path = root / encoder / key
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, text_emb=emb, mask=np.ones(n, np.uint8), tokens=np.arange(n, dtype=np.int32))
            written[encoder][key] = emb
    return written


@pytest.fixture
def index_frames():
    """`index_frames(num_frames, height=32, width=32)`: frames whose green level encodes their index."""
    return _index_frames


@pytest.fixture
def decoded_index():
    """`decoded_index(video_cthw)`: the frame indices encoded in a model-layout clip."""
    return _decoded_index


@pytest.fixture
def text_cache_writer():
    """`text_cache_writer(root, entries, dims, max_lengths)`: write a contract-format text cache."""
    return _write_text_cache
