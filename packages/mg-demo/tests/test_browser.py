"""End to end in headless Chromium (Debian's /usr/bin/chromium driven by Playwright; no browser download):
type a prompt, generate, watch the progress bar, wait for the video, screenshot; refuse a bad size.

Skipped when Chromium is missing unless MG_REQUIRE_BROWSER is set (CI sets it: there a missing browser fails).
Set MG_DEMO_SCREENSHOT=path to also write the screenshot there (docs/screenshot.png is made this way).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from mg_demo.testing import FRAMES, SIZE

CHROMIUM = os.environ.get("MG_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_STEPS = 40  # long enough for progress updates to reach the page, ~1-2 s on 2 cores

# Collects every progress text the page shows (a MutationObserver misses none, however quick the run).
WATCH_PROGRESS = """() => {
    window.progressSeen = [];
    new MutationObserver(() => {
        for (const el of document.querySelectorAll('.progress-level-inner, .progress-text')) {
            const text = el.textContent.trim();
            if (text && !window.progressSeen.includes(text)) window.progressSeen.push(text);
        }
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        message = f"no Chromium at {CHROMIUM} (Debian: apt-get install -y --no-install-recommends chromium)"
        if os.environ.get("MG_REQUIRE_BROWSER"):
            pytest.fail(message + "; MG_REQUIRE_BROWSER is set, so the browser test must run")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = []

    def local_only(route):  # the app must work offline: nothing may be fetched from elsewhere
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    page.goto(server.url)
    yield page
    page.close()
    assert not outside, f"the page tried to fetch {outside}"


def test_prompt_generate_video_and_screenshot(page, tmp_path, pipeline_dir, server):
    page.get_by_label("Prompt", exact=True).fill("a red circle moving left")
    seed = page.get_by_label("Seed", exact=True)
    expect(seed).to_have_value("0")
    page.locator("#random-seed").click()
    expect(seed).not_to_have_value("0", timeout=10_000)  # the random-seed button chose a new seed
    chosen_seed = int(seed.input_value())
    steps = page.get_by_role("spinbutton", name="Sampling steps")
    steps.fill(str(BROWSER_STEPS))
    steps.press("Enter")

    page.evaluate(WATCH_PROGRESS)
    page.locator("#generate").click()
    video = page.locator("#video-output video")
    video.wait_for(timeout=120_000)
    # The browser decoded the mp4's header: the requested size and 16 frames at 8 fps.
    page.wait_for_function("(v) => v.readyState >= 1", arg=video.element_handle(), timeout=30_000)
    width, height, duration = video.evaluate("(v) => [v.videoWidth, v.videoHeight, v.duration]")
    assert (height, width) == SIZE and duration == pytest.approx(FRAMES / 8.0, abs=0.2)

    status = page.locator("#status").inner_text()
    assert f"seed {chosen_seed}" in status and f"{BROWSER_STEPS} steps" in status
    page.locator("#gallery video, #gallery img").first.wait_for(timeout=30_000)
    seen = page.evaluate("() => window.progressSeen")
    assert any(re.search(rf"Sampling: step \d+/{BROWSER_STEPS}", text) for text in seen), seen
    assert any("Decoding" in text for text in seen), seen

    # Clicking the result in the gallery puts its settings back into the form.
    seed.fill("0")
    steps.fill("7")
    steps.press("Enter")
    page.locator("#gallery video, #gallery img").first.click()
    expect(seed).to_have_value(str(chosen_seed))
    expect(steps).to_have_value(str(BROWSER_STEPS))
    page.keyboard.press("Escape")  # close the gallery's preview

    # No local absolute path in the page (the checkpoint and the output folder are named, not located).
    text = page.locator("body").inner_text()
    assert pipeline_dir.name in text
    for local in (str(pipeline_dir), str(server.cwd)):
        assert local not in text and local not in page.content()

    page.wait_for_timeout(500)  # let the first frame paint
    shot = tmp_path / "screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("MG_DEMO_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["MG_DEMO_SCREENSHOT"])


def test_a_size_the_model_cannot_make_is_refused_with_a_message(page):
    page.get_by_label("Prompt", exact=True).fill("a blue square moving up")
    height = page.get_by_label("Height", exact=True)
    height.fill("40")
    page.locator("#generate").click()
    page.get_by_text("height must be a positive multiple of 16, got 40").first.wait_for(timeout=30_000)
    prompt = page.get_by_label("Prompt", exact=True)
    height.fill("32")
    prompt.fill("x" * 2001)  # over the prompt length limit: refused in the page too
    page.locator("#generate").click()
    page.get_by_text("the prompt has 2001 characters; at most 2000 are allowed").first.wait_for(
        timeout=30_000
    )
    assert "Traceback" not in page.content()
    assert page.locator("#video-output video").count() == 0  # nothing was generated


def test_a_reference_image_is_uploaded_and_generates(browser, pt2v_server, images, page):
    """The PT2V page has a reference input (the T2V page of `page` has none); an uploaded image generates."""
    assert page.locator("#reference").is_hidden()
    pt2v = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        pt2v.goto(pt2v_server.url)
        pt2v.get_by_label("Prompt", exact=True).fill("the subject moving left")
        pt2v.get_by_role("spinbutton", name="Sampling steps").fill("3")
        pt2v.locator("#reference input[type=file]").set_input_files(str(images["red"]))
        pt2v.locator("#reference img").first.wait_for(timeout=30_000)  # the upload is shown
        pt2v.locator("#generate").click()
        pt2v.locator("#video-output video").wait_for(timeout=120_000)
        expect(pt2v.locator("#status")).to_contain_text("reference red.png", timeout=30_000)
    finally:
        pt2v.close()


def test_a_video_is_uploaded_and_edited(browser, edit_server, input_videos):
    """An edit pipeline's page has the editing section: upload, instruction, task, Edit, the edited video."""
    edit = browser.new_page(viewport={"width": 1280, "height": 1400})
    try:
        edit.goto(edit_server.url)
        edit.locator("#edit-input input[type=file]").set_input_files(str(input_videos["a"]))
        edit.locator("#edit-input video").first.wait_for(timeout=30_000)  # the upload is shown
        edit.get_by_label("Instruction", exact=True).fill("make the red circle blue")
        edit.get_by_role("spinbutton", name="Edit sampling steps").fill("3")
        edit.locator("#edit").click()
        edit.locator("#edit-output video").wait_for(timeout=120_000)
        expect(edit.locator("#edit-status")).to_contain_text("task recolor", timeout=30_000)
    finally:
        edit.close()
