"""Screenshot of the running app (for the README): start `mg-demo`, generate the first example prompt in
headless Chromium, save a full-page PNG.

    python packages/mg-demo/scripts/screenshot.py --checkpoint runs/quickstart --out packages/mg-demo/docs/screenshot.png
    python packages/mg-demo/scripts/screenshot.py --tiny --out /tmp/shot.png    # untrained tiny pipeline

Needs the test extra (playwright) and Debian's chromium (`apt-get install -y --no-install-recommends chromium`).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mg-demo exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "config", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mg-demo did not answer at {url} within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="pipeline folder or run directory to serve")
    source.add_argument("--tiny", action="store_true", help="serve an untrained tiny random pipeline")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the app's)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    args = parser.parse_args()

    checkpoint = args.checkpoint
    if args.tiny:
        from mg_train.testing import tiny_random_pipeline

        checkpoint = str(Path(tempfile.mkdtemp(prefix="mg-demo-shot-")) / "pipeline")
        tiny_random_pipeline(seed=0, frames=16, size=(64, 64)).save_pretrained(checkpoint)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "mg_demo", "--checkpoint", checkpoint, "--port", str(port)]
    server = subprocess.Popen(command, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_for(url, server)
        from playwright.sync_api import expect, sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            examples = page.locator(".gallery-item, button.gallery")
            if examples.count():
                examples.first.click()
            else:
                page.get_by_label("Prompt", exact=True).fill("a red circle moving left")
            expect(page.get_by_label("Prompt", exact=True)).not_to_have_value("")
            if args.steps:
                steps = page.get_by_role("spinbutton", name="Sampling steps")
                steps.fill(str(args.steps))
                steps.press("Enter")
            page.locator("#generate").click()
            page.locator("#video-output video").wait_for(timeout=600_000)
            page.locator("#gallery video, #gallery img").first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)  # let the video play a little
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
