"""The HTTP API of the real `python -m mg_demo` server, through gradio_client: concurrent users all get
their own correct result through the queue; impossible requests get a message."""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError, ValidationError
from PIL import Image

from mg_demo.generation import IMAGE, MAX_SEED, VIDEO
from mg_demo.limits import MAX_PROMPT_CHARS
from mg_demo.testing import STEPS, Server, decode_video
from mg_train.pipeline import save_media

# Five shapes, each asked twice with different prompts and seeds: ten requests; a video's partner (same shape,
# other seed) shows how different a wrong answer would look.
SHAPES = [
    (VIDEO, 16, 32, 32),
    (VIDEO, 8, 48, 32),
    (VIDEO, 24, 32, 48),
    (IMAGE, 1, 32, 32),
    (IMAGE, 1, 48, 48),
]
REQUESTS = [
    (f"prompt {i}: a {'red' if i < 5 else 'blue'} circle", mode, frames, height, width, 100 + i)
    for i, (mode, frames, height, width) in enumerate(SHAPES * 2)
]


def media_path(output) -> str:
    return output if isinstance(output, str) else output["video"]


def test_ten_concurrent_users_all_get_their_own_result(server, reference, tmp_path):
    clients = [Client(server.url, verbose=False) for _ in REQUESTS]  # ten sessions, like ten browser tabs
    jobs = [
        client.submit(prompt, "", mode, frames, height, width, STEPS, 5.0, seed, api_name="/generate")
        for client, (prompt, mode, frames, height, width, seed) in zip(clients, REQUESTS, strict=True)
    ]
    outputs = [job.result(timeout=600) for job in jobs]

    def expected(request):
        prompt, _, frames, height, width, seed = request
        return reference.generate([prompt], num_frames=frames, size=(height, width), steps=STEPS, seed=seed)[
            0
        ]

    references = [expected(request) for request in REQUESTS]
    indices = set()
    for i, (output, request, ref) in enumerate(zip(outputs, REQUESTS, references, strict=True)):
        prompt, mode, frames, height, width, seed = request
        video, image, download, status, gallery = output
        assert f"seed {seed}" in status and repr(prompt) in status
        assert len(gallery) == 1  # each user's gallery holds only their own session's results
        media = image if mode == IMAGE else media_path(video)
        assert Path(download).read_bytes() == Path(media).read_bytes()  # the download is the same file
        indices.add(int(status.split("#")[1].split(" ")[0]))
        if mode == IMAGE:
            assert video is None
            pixels = np.asarray(Image.open(image).convert("RGB"))
            np.testing.assert_array_equal(pixels, ref[0])  # PNG is lossless: exactly the pipeline's frame
            continue
        assert image is None and media_path(video).endswith(f"seed{seed}.mp4")
        decoded = decode_video(media_path(video))
        assert decoded.shape == (frames, height, width, 3)
        # H.264 is lossy: compare with the reference written the same way, against the partner request's.
        partner = references[(i + 5) % 10]
        (own_file, partner_file) = save_media(np.stack([ref, partner]), tmp_path, [f"{i}", f"{i}p"], fps=8.0)
        error = np.abs(decoded.astype(float) - decode_video(own_file)).mean()
        other = np.abs(decoded.astype(float) - decode_video(partner_file)).mean()
        assert error < 0.2 * other, (i, error, other)
    assert len(indices) == len(REQUESTS)  # ten distinct results, none lost or overwritten


def test_out_of_range_requests_get_the_reason(server):
    client = Client(server.url, verbose=False)
    cases = [
        ((VIDEO, 16, 40, 32), "height must be a positive multiple of 16, got 40"),
        ((VIDEO, 128, 512, 512), "more than this pipeline's limit of 8192 (memory)"),
        ((VIDEO, 400, 32, 32), "400 frames is more than this model's position table covers"),
    ]

    def ask(case):
        (mode, frames, height, width), _ = case
        with pytest.raises(Exception) as err:  # gradio_client's AppError carries the server's message
            client.predict(
                "a red circle", "", mode, frames, height, width, STEPS, 5.0, 0, api_name="/generate"
            )
        return str(err.value)

    with ThreadPoolExecutor(len(cases)) as pool:
        messages = list(pool.map(ask, cases))
    for message, (_, expected) in zip(messages, cases, strict=True):
        assert expected in message and "Traceback" not in message


def test_random_seed_endpoint(server):
    client = Client(server.url, verbose=False)
    seeds = {client.predict(api_name="/random_seed") for _ in range(3)}
    assert all(isinstance(s, int) and 0 <= s <= MAX_SEED for s in seeds) and len(seeds) > 1


def test_a_huge_prompt_is_refused_before_it_queues(server):
    client = Client(server.url, verbose=False)
    with pytest.raises(ValidationError) as err:
        client.predict("a red circle " * 80_000, "", VIDEO, 16, 32, 32, STEPS, 5.0, 0, api_name="/generate")
    assert f"the prompt has {13 * 80_000} characters; at most {MAX_PROMPT_CHARS} are allowed" in str(
        err.value
    )
    with pytest.raises(ValidationError, match="the negative prompt has"):
        client.predict("a red circle", "x" * 5000, VIDEO, 16, 32, 32, STEPS, 5.0, 0, api_name="/generate")


def test_the_page_shows_no_local_absolute_paths(server, pipeline_dir):
    with urllib.request.urlopen(server.url + "config", timeout=30) as response:
        config = response.read().decode()
    assert pipeline_dir.name in config
    for local in (str(pipeline_dir), str(pipeline_dir.parent), str(server.cwd)):
        assert local not in config


@pytest.fixture(scope="module")
def limited_server(pipeline_dir, tmp_path_factory):
    """A demo with tight limits: 2 requests per client, 8 s per request, a 1-byte output budget."""
    cwd = tmp_path_factory.mktemp("limited")
    options = [
        "--max-per-client",
        "2",
        "--timeout",
        "8",
        "--max-steps",
        "5000",
        "--max-output-mb",
        "0.000001",
    ]
    srv = Server(
        ["--checkpoint", str(pipeline_dir), "--no-jit", "--output-dir", str(cwd / "out"), *options], cwd
    )
    yield srv
    srv.stop()


def test_one_client_gets_its_share_of_the_queue_and_old_outputs_go(limited_server):
    jobs = [
        Client(limited_server.url, verbose=False).submit(
            f"a red circle {i}", "", VIDEO, 16, 32, 32, 40, 5.0, i, api_name="/generate"
        )
        for i in range(3)
    ]
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(job.result(timeout=300)[3])
        except ValidationError as err:
            outcomes.append(err)
    refused = [o for o in outcomes if isinstance(o, ValidationError)]
    assert len(refused) == 1, outcomes  # the third request of one address, while two wait or run
    assert "you already have 2 requests waiting or running" in str(refused[0])
    assert all(str(o).startswith("**Done:**") for o in outcomes if o not in refused)
    # once they finished, the same client is served again
    status = Client(limited_server.url, verbose=False).predict(
        "a blue square", "", VIDEO, 16, 32, 32, STEPS, 5.0, 7, api_name="/generate"
    )[3]
    assert "'a blue square'" in status
    # a 1-byte budget keeps only the newest result in the output folder
    results = sorted((limited_server.cwd / "out").iterdir())
    assert [path.name for path in results] == ["0003-a-blue-square-seed7.mp4"]


def test_a_request_over_the_time_limit_is_stopped_with_a_message(limited_server):
    client = Client(limited_server.url, verbose=False)
    start = time.monotonic()
    with pytest.raises(AppError) as err:
        client.predict("a red circle", "", VIDEO, 24, 48, 48, 5000, 5.0, 0, api_name="/generate")
    assert time.monotonic() - start < 60  # 5000 steps would take minutes
    message = str(err.value)
    assert "stopped at sampling step" in message and "this server allows 8 s per request" in message
    status = client.predict("a red circle", "", VIDEO, 16, 32, 32, STEPS, 5.0, 0, api_name="/generate")[3]
    assert status.startswith("**Done:**")  # the server goes on serving
