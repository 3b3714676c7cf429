"""A Movie Gen Edit pipeline in the demo: the real server edits an uploaded video through gradio_client and
returns the pipeline's own edit (another input gives another result); bad edit requests get a message; a
text-to-video server has no editing endpoint; the page's editing section works in Chromium (test_browser.py)."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from mg_data import read_video
from mg_demo.testing import FRAMES, SIZE, STEPS, decode_video
from mg_train.pipeline import MovieGenPipeline, save_media


def test_the_api_edits_a_video_like_the_pipeline(edit_server, edit_dir, input_videos, tmp_path):
    client = Client(edit_server.url, verbose=False)
    instruction, seed = "make the red circle blue", 3
    outputs = {
        name: client.predict(
            handle_file(str(path)), instruction, "recolor", STEPS, 5.0, seed, api_name="/edit"
        )
        for name, path in input_videos.items()
    }
    pipe = MovieGenPipeline.from_pretrained(edit_dir, jit=False)
    expected = {
        name: pipe.edit(read_video(path), instruction, "recolor", steps=STEPS, cfg_scale=5.0, seed=seed)
        for name, path in input_videos.items()
    }
    files = save_media(np.stack([expected["a"], expected["b"]]), tmp_path, ["a", "b"], fps=8.0)
    written = {name: decode_video(path).astype(float) for name, path in zip(("a", "b"), files, strict=True)}
    assert np.abs(written["a"] - written["b"]).mean() > 1.0, "the input video changed nothing"
    for name, (video, status) in outputs.items():
        assert "task recolor" in status and repr(instruction) in status
        decoded = decode_video(video if isinstance(video, str) else video["video"]).astype(float)
        assert decoded.shape == (FRAMES, *SIZE, 3)
        other = "b" if name == "a" else "a"
        error, wrong = (np.abs(decoded - written[k]).mean() for k in (name, other))
        assert error < 0.2 * wrong, (name, error, wrong)


def test_bad_edit_requests_get_the_reason(edit_server, input_videos):
    client = Client(edit_server.url, verbose=False)
    video = handle_file(str(input_videos["a"]))
    with pytest.raises(
        AppError, match=r"blur is not in the list of choices: \[.recolor., .mark., .remove., .background.\]"
    ):
        client.predict(video, "blur it", "blur", STEPS, 5.0, 0, api_name="/edit")
    with pytest.raises(AppError, match="instruction: say what to change"):
        client.predict(video, " ", "recolor", STEPS, 5.0, 0, api_name="/edit")


def test_a_text_to_video_server_has_no_editing(server):
    client = Client(server.url, verbose=False)
    assert "/edit" not in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
