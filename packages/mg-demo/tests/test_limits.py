"""The per-client queue share and the prompt length limit, with a clock the test moves."""

from __future__ import annotations

import pytest

from mg_demo.limits import MAX_PROMPT_CHARS, ClientShare, check_prompt_length
from mg_train.pipeline import RequestError


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_each_client_holds_at_most_its_share_until_its_requests_finish():
    clock = Clock()
    share = ClientShare(max_per_client=2, expire_after=60, clock=clock)
    share.admit("a")
    clock.now += 1
    share.admit("a")
    with pytest.raises(RequestError, match=r"you already have 2 requests waiting or running; .* at most 2"):
        share.admit("a")
    share.admit("b")  # another address is not affected
    assert share.start("a") == 100.0  # the oldest admission starts first, with its own admission time
    assert share.held("a") == 2  # one running, one waiting
    with pytest.raises(RequestError):
        share.admit("a")
    share.finish("a")
    assert share.held("a") == 1
    share.admit("a")  # a finished request frees its place
    assert share.held("a") == 2 and share.held("b") == 1


def test_admissions_that_never_ran_expire():
    clock = Clock()
    share = ClientShare(max_per_client=1, expire_after=60, clock=clock)
    share.admit("a")
    clock.now += 59
    with pytest.raises(RequestError):
        share.admit("a")
    clock.now += 2  # the request was dropped from the queue (tab closed): its place comes back
    share.admit("a")
    assert share.start("a") == clock.now  # ... and the new admission is the one that starts
    assert share.start("b") == clock.now  # a direct call without admission starts now


def test_prompt_length_limit():
    check_prompt_length("prompt", "x" * MAX_PROMPT_CHARS)
    with pytest.raises(RequestError, match=f"the prompt has {MAX_PROMPT_CHARS + 1} characters; at most"):
        check_prompt_length("prompt", "x" * (MAX_PROMPT_CHARS + 1))
    with pytest.raises(ValueError, match="at least 1"):
        ClientShare(max_per_client=0)
