"""The sampling pipeline: shapes, determinism per (prompt, seed), persistence, and refusals with reasons."""

from __future__ import annotations

import numpy as np
import pytest

from mg_data import read_video
from mg_train.pipeline import MovieGenPipeline, RequestError, save_media, slugify
from mg_train.testing import tiny_random_pipeline


@pytest.fixture(scope="module")
def pipe():
    return tiny_random_pipeline(seed=1)


def test_generate_shapes_and_seed_per_prompt(pipe):
    both = pipe.generate(
        ["a red circle moving left", "a blue square moving up"], steps=3, cfg_scale=2.0, seed=5
    )
    assert both.shape == (2, 16, 64, 64, 3) and both.dtype == np.uint8
    alone = pipe.generate(["a blue square moving up"], steps=3, cfg_scale=2.0, seed=6)
    np.testing.assert_array_equal(alone[0], both[1])  # prompt 1 of the batch used seed 5 + 1
    image = pipe.generate(["a red circle"], num_frames=1, size=(32, 48), steps=2)
    assert image.shape == (1, 1, 32, 48, 3)


def test_progress_reports_every_stage(pipe):
    seen = []
    pipe.generate(["x"], steps=3, progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert ("denoise", 3, 3) in seen and ("decode", 1, 1) in seen and seen[0][0] == "text"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_frames": 0}, "at least 1"),
        ({"num_frames": 10_000}, "position table covers"),
        ({"size": (60, 64)}, "multiple of 16"),
        ({"size": (4096, 64)}, "exceeds this model's position table"),
        ({"steps": 1}, "steps must be at least 2"),
    ],
)
def test_out_of_range_requests_are_refused_with_a_reason(pipe, kwargs, message):
    with pytest.raises(RequestError, match=message):
        pipe.generate(["a prompt"], **kwargs)


def test_token_limit_is_enforced(pipe):
    frames, size = 128, (256, 256)
    tokens = pipe.num_tokens(frames, size)
    assert tokens == (128 // 8) * (256 // 16) * (256 // 16)
    pipe.info.max_tokens, saved = tokens - 1, pipe.info.max_tokens
    try:
        with pytest.raises(RequestError, match="tokens, more than"):
            pipe.check_request(frames, size)
    finally:
        pipe.info.max_tokens = saved


def test_save_and_load_round_trip(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "run" / "pipeline")
    loaded = MovieGenPipeline.from_pretrained(tmp_path / "run", jit=False)
    a = pipe.generate(["a green triangle moving right"], steps=2, seed=3)
    b = loaded.generate(["a green triangle moving right"], steps=2, seed=3)
    np.testing.assert_array_equal(a, b)
    assert loaded.info.example_prompts == pipe.info.example_prompts


def test_media_files_are_written(tmp_path, pipe):
    video = pipe.generate(["v"], steps=2)
    image = pipe.generate(["i"], steps=2, num_frames=1)
    (mp4,) = save_media(video, tmp_path, ["clip"], fps=8)
    (png,) = save_media(image, tmp_path, ["still"], fps=8)
    assert mp4.suffix == ".mp4" and png.suffix == ".png"
    assert read_video(mp4).shape == (16, 64, 64, 3)
    assert slugify("A red circle, moving LEFT!") == "a-red-circle-moving-left"
