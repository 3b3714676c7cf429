"""Progress output for long loops: a status line with step rate, loss and ETA, plus metrics as JSON lines."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """Report `update(step, **metrics)` calls as a progress line and append them to a JSONL file.

    On a terminal the line is redrawn in place; otherwise (CI logs, pipes) a line is printed whenever the step
    passes a multiple of `every` (steps may advance by a batch at a time) and at the end, so logs stay readable.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        jsonl_path: str | Path | None = None,
        start: int = 0,
        every: int = 10,
        stream: IO[str] | None = None,
    ):
        self.total, self.desc, self.start, self.every = total, desc, start, max(every, 1)
        self.stream = stream or sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.jsonl = open(jsonl_path, "a") if jsonl_path else None  # noqa: SIM115 (closed in close())
        self.t0 = time.perf_counter()
        self.step = start
        self.shown = start // self.every  # lines go out when a step passes the next multiple of `every`

    def update(self, step: int, **metrics: Any) -> None:
        self.step = step
        elapsed = time.perf_counter() - self.t0
        done = step - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        if self.jsonl:
            values = {k: _plain(v) for k, v in metrics.items()}
            bad = [k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)]
            record = {
                "step": step,
                "time": round(elapsed, 3),
                **{k: None if k in bad else v for k, v in values.items()},
            }
            if bad:  # JSON has no NaN/inf: null, and the names of the metrics that were not finite
                record["nonfinite"] = bad
            self.jsonl.write(json.dumps(record, allow_nan=False) + "\n")
            self.jsonl.flush()
        if self.interactive or step // self.every > self.shown or step >= self.total:
            self.shown = step // self.every
            eta = (self.total - step) / rate if rate > 0 else math.inf
            shown = " ".join(f"{k}={_short(v)}" for k, v in metrics.items())
            line = (
                f"{self.desc} {step}/{self.total} [{format_duration(elapsed)}<{format_duration(eta)}, "
                f"{rate:.2f} step/s] {shown}"
            )
            self.stream.write(("\r" + line + "\x1b[K") if self.interactive else line + "\n")
            self.stream.flush()

    def log(self, message: str) -> None:
        """Print a message on its own line (not overwritten by the progress line)."""
        self.stream.write(("\n" if self.interactive else "") + message + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\n")
        if self.jsonl:
            self.jsonl.close()
            self.jsonl = None


def _plain(value: Any) -> Any:
    try:
        return float(value) if not isinstance(value, (str, bool, int)) else value
    except (TypeError, ValueError):
        return str(value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
