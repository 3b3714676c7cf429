"""The HTTP API of the real `python -m mg_demo` server, through gradio_client: concurrent users all get
their own correct result through the queue; impossible requests get a message."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image

from demo_support import STEPS, decode_video
from mg_demo.generation import IMAGE, MAX_SEED, VIDEO
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
