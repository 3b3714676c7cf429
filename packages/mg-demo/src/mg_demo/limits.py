"""What keeps one client or one request from exhausting a shared demo: a prompt length limit, a share of the
queue per client address, and a time limit per request (from admission to the finished file)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

MAX_PROMPT_CHARS = 2000  # far beyond any text encoder's token window; a 50 MB prompt is refused at once
DEFAULT_PER_CLIENT = 10
DEFAULT_TIMEOUT = 900.0


def check_prompt_length(name: str, text: str, limit: int = MAX_PROMPT_CHARS) -> None:
    """Refuse a prompt longer than `limit` characters before anything else touches it."""
    from mg_train.pipeline import RequestError  # here: the CLI reads this module's defaults without MindSpore

    if isinstance(text, str) and len(text) > limit:
        raise RequestError(f"the {name} has {len(text)} characters; at most {limit} are allowed")


class ClientShare:
    """Requests each client address has waiting or running, so that no client holds more than its share of the
    queue. A request is admitted when it joins the queue and taken back when its generation starts; it leaves
    when the generation ends. Admissions older than `expire_after` seconds are forgotten (their request was
    dropped from the queue without running, e.g. the browser tab was closed)."""

    def __init__(
        self,
        max_per_client: int = DEFAULT_PER_CLIENT,
        expire_after: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ):
        if max_per_client < 1:
            raise ValueError(f"max_per_client must be at least 1, got {max_per_client}")
        self.max_per_client = max_per_client
        self.expire_after = expire_after
        self.clock = clock
        self._admitted: dict[str, deque[float]] = defaultdict(deque)  # admission times, oldest first
        self._running: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def _forget_expired(self, client: str) -> None:
        queue, now = self._admitted[client], self.clock()
        while queue and now - queue[0] > self.expire_after:
            queue.popleft()

    def held(self, client: str) -> int:
        """Requests of `client` waiting in the queue or running now."""
        with self._lock:
            self._forget_expired(client)
            return len(self._admitted[client]) + self._running[client]

    def admit(self, client: str) -> None:
        """Count one more request for `client`, or raise RequestError if it already holds its share."""
        with self._lock:
            self._forget_expired(client)
            held = len(self._admitted[client]) + self._running[client]
            if held >= self.max_per_client:
                from mg_train.pipeline import RequestError

                raise RequestError(
                    f"you already have {held} requests waiting or running; this server takes at most "
                    f"{self.max_per_client} per client at once: wait for one to finish"
                )
            self._admitted[client].append(self.clock())

    def start(self, client: str) -> float:
        """The generation of `client`'s oldest admitted request starts: returns when it was admitted (now for a
        request that never went through `admit`, e.g. a direct call)."""
        with self._lock:
            self._forget_expired(client)
            queue = self._admitted[client]
            admitted = queue.popleft() if queue else self.clock()
            self._running[client] += 1
            return admitted

    def finish(self, client: str) -> None:
        with self._lock:
            self._running[client] = max(0, self._running[client] - 1)
