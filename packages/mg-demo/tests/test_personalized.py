"""A personalised (PT2V) pipeline in the demo: the real server takes a reference image through gradio_client
and returns exactly the pipeline's video for that image (another image gives another video); the page shows a
reference input only for a PT2V pipeline, and a browser upload generates; a text-to-video server refuses a
reference with a message."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, ValidationError

from mg_demo.generation import VIDEO
from mg_demo.testing import FRAMES, SIZE, STEPS, decode_video, still
from mg_train.pipeline import save_media


def test_the_api_takes_a_reference_and_returns_the_pipelines_video(
    pt2v_server, pt2v_reference, images, tmp_path
):
    client = Client(pt2v_server.url, verbose=False)
    prompt, seed = "the subject moving left", 7
    outputs = {
        name: client.predict(
            prompt, "", VIDEO, FRAMES, *SIZE, STEPS, 5.0, seed, handle_file(str(path)), api_name="/generate"
        )
        for name, path in images.items()
    }
    expected = {
        name: pt2v_reference.generate(
            [prompt],
            num_frames=FRAMES,
            size=SIZE,
            steps=STEPS,
            cfg_scale=5.0,
            seed=seed,
            reference=still(color),
        )[0]
        for name, color in (("red", (225, 35, 35)), ("blue", (40, 60, 220)))
    }
    files = save_media(np.stack([expected["red"], expected["blue"]]), tmp_path, ["red", "blue"], fps=8.0)
    written = {
        name: decode_video(path).astype(float) for name, path in zip(("red", "blue"), files, strict=True)
    }
    assert np.abs(written["red"] - written["blue"]).mean() > 1.0, "the reference changed nothing"
    for name, output in outputs.items():
        video, _, _, status, _ = output
        assert f"reference {images[name].name}" in status
        decoded = decode_video(video if isinstance(video, str) else video["video"]).astype(float)
        other = "blue" if name == "red" else "red"
        error, wrong = (np.abs(decoded - written[k]).mean() for k in (name, other))
        assert error < 0.2 * wrong, (name, error, wrong)


def test_a_text_to_video_server_refuses_a_reference(server, images):
    client = Client(server.url, verbose=False)
    with pytest.raises((AppError, ValidationError), match="text-to-video"):
        client.predict(
            "a red circle",
            "",
            VIDEO,
            FRAMES,
            *SIZE,
            STEPS,
            5.0,
            0,
            handle_file(str(images["red"])),
            api_name="/generate",
        )
