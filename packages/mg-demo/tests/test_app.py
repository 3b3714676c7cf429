"""The app's event functions called directly, and the layout's wiring (examples, queue, API names)."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from mg_demo.app import DemoHandlers, build_app
from mg_demo.generation import IMAGE, VIDEO, Generator
from mg_demo.serving import missing_checkpoint_app
from mg_demo.testing import FRAMES, STEPS, decode_video


class Recorder:
    """Stands in for gr.Progress: records (fraction, desc) calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, fraction, desc=None, **_):
        self.calls.append((fraction, desc))


@pytest.fixture(scope="module")
def generator(pipeline_dir, tmp_path_factory):
    from mg_train.pipeline import MovieGenPipeline

    pipe = MovieGenPipeline.from_pretrained(pipeline_dir, jit=False)
    return Generator(pipe, tmp_path_factory.mktemp("out"), checkpoint=pipeline_dir)


@pytest.fixture(scope="module")
def handlers(generator):
    return DemoHandlers(generator)


def test_generate_returns_the_result_and_builds_the_session_gallery(handlers, reference):
    progress = Recorder()
    video, image, download, status, gallery, history = handlers.generate(
        "a red circle", "", VIDEO, FRAMES, 32, 32, STEPS, 5.0, 11, None, [], progress=progress
    )
    assert image is None and video == download and video.endswith("-a-red-circle-seed11.mp4")
    assert decode_video(video).shape == (FRAMES, 32, 32, 3)
    assert "seed 11" in status and f"{STEPS} steps" in status and "16 frames 32x32" in status
    assert [desc for _, desc in progress.calls][-1] == "Done"
    assert any(desc == f"Sampling: step {STEPS}/{STEPS}" for _, desc in progress.calls)

    video2, image2, download2, _, gallery2, history2 = handlers.generate(
        "a blue square", "", IMAGE, FRAMES, 48, 32, STEPS, 3.0, 4, None, history, progress=Recorder()
    )
    assert video2 is None and image2 == download2 and image2.endswith(".png")
    expected = reference.generate(
        ["a blue square"], num_frames=1, size=(48, 32), steps=STEPS, cfg_scale=3.0, seed=4
    )
    np.testing.assert_array_equal(np.asarray(Image.open(image2).convert("RGB")), expected[0, 0])
    # newest first, each with a caption holding its settings
    assert [path for path, _ in gallery2] == [image2, video]
    assert "image 48x32" in gallery2[0][1] and "CFG 3" in gallery2[0][1] and "seed 4" in gallery2[0][1]
    assert gallery2[1] == gallery[0]
    assert history2[0]["settings"]["mode"] == IMAGE and history2[1] == history[0]


@pytest.mark.parametrize(
    ("frames", "height", "message"),
    [(FRAMES, 40, "height must be a positive multiple of 16"), (1000, 32, "1000 frames is more than")],
)
def test_out_of_range_settings_raise_a_gradio_error_with_the_reason(handlers, frames, height, message):
    args = ("a red circle", "", VIDEO, frames, height, 32, STEPS, 5.0, 0)
    with pytest.raises(gr.Error, match=message):
        handlers.check(*args)
    with pytest.raises(gr.Error, match=message):
        handlers.generate(*args, None, [], progress=Recorder())


def test_unexpected_failures_become_a_message(handlers, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("device <lost>")

    monkeypatch.setattr(handlers.generator.pipeline, "generate", broken)
    with pytest.raises(gr.Error) as err:
        handlers.generate(
            "a red circle", "", VIDEO, FRAMES, 32, 32, STEPS, 5.0, 0, None, [], progress=Recorder()
        )
    assert "generation failed (RuntimeError: device &lt;lost&gt;)" in err.value.message


def test_mode_switch_and_gallery_reuse(handlers):
    frames, video, image = handlers.show_mode(IMAGE)
    assert (frames["visible"], video["visible"], image["visible"]) == (False, False, True)
    frames, video, image = handlers.show_mode(VIDEO)
    assert (frames["visible"], video["visible"], image["visible"]) == (True, True, False)

    history = [
        {"settings": {"prompt": "b", "negative_prompt": "", "mode": IMAGE, "frames": 1, "height": 48,
                      "width": 32, "steps": 3, "cfg_scale": 3.0, "seed": 4}},
        {"settings": {"prompt": "a", "negative_prompt": "n", "mode": VIDEO, "frames": 24, "height": 64,
                      "width": 32, "steps": 5, "cfg_scale": 2.5, "seed": 9, "reference": "/tmp/red.png"}},
    ]  # fmt: skip
    assert handlers.reuse(history, gr.SelectData(None, {"index": 1, "value": None})) == (
        "a",
        "n",
        VIDEO,
        24,
        64,
        32,
        5,
        2.5,
        9,
        "/tmp/red.png",
    )
    reused = handlers.reuse(history, gr.SelectData(None, {"index": 0, "value": None}))
    assert reused[:3] == ("b", "", IMAGE) and reused[3] == gr.update()  # an image keeps the frame field
    assert reused[-1] is None  # no reference recorded (a text-to-video result): the input is cleared


def test_layout_examples_queue_and_api(generator, reference):
    app = build_app(generator)
    datasets = [block for block in app.blocks.values() if isinstance(block, gr.Dataset)]
    assert [sample[0] for sample in datasets[0].samples] == reference.info.example_prompts
    functions = {fn.api_name: fn for fn in app.fns.values() if fn.api_name}
    assert functions["generate"].concurrency_limit == 1 and functions["generate"].queue
    assert "random_seed" in functions
    numbers = {block.label: block.value for block in app.blocks.values() if isinstance(block, gr.Number)}
    assert numbers["Frames"] == FRAMES and (numbers["Height"], numbers["Width"]) == reference.info.size
    description = app.get_config_file()["components"][0]["props"]["value"]
    # the checkpoint is named, never by its local absolute path
    assert generator.checkpoint.name in description and str(generator.checkpoint) not in description
    assert functions["generate"].validator.__name__ == "admit"  # limits are checked when joining the queue


def test_missing_checkpoint_page_names_the_command_and_the_places(tmp_path):
    app = missing_checkpoint_app([tmp_path / "a", tmp_path / "b"])
    (text,) = [block.value for block in app.blocks.values() if isinstance(block, gr.Markdown)]
    assert (
        "mg-train quickstart" in text
        and f"`…/{tmp_path.name}/a`" in text
        and f"`…/{tmp_path.name}/b`" in text
    )
    assert str(tmp_path) not in text  # no local absolute paths on the page
