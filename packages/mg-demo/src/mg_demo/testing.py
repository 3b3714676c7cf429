"""Test helpers for mg-demo and for anyone testing a deployment: a real `python -m mg_demo` server in its own
process group (`Server`), and an mp4 reader independent of mg-data's (`decode_video`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import numpy as np

FRAMES, SIZE = 16, (32, 32)  # the test pipeline's training settings (its defaults in the UI)
STEPS = 3  # sampling steps of every test request: enough for CFG and the schedule, cheap on 2 cores


def decode_video(path: str | Path) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of an mp4, decoded with PyAV (independently of mg-data's reader)."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def still(color: tuple[int, int, int], size: int = 48) -> np.ndarray:
    """A grey still with a coloured square in the middle: a reference image for a personalised pipeline."""
    image = np.full((size, size, 3), 128, np.uint8)
    image[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = color
    return image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A `python -m mg_demo ...` subprocess in its own process group, stopped with the group."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.cwd = cwd
        self.log_path = cwd / f"server-{self.port}.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mg_demo", *args, "--port", str(self.port)],
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mg-demo exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "config", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"mg-demo did not answer within {timeout} s:\n{self.log()}")
            time.sleep(0.5)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        self._log.close()
