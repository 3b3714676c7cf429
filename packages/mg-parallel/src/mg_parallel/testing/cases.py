"""Batch many small distributed test cases into one msrun launch and hand each back to its own pytest test."""

from __future__ import annotations

import fnmatch
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any


class CaseError(AssertionError):
    """A case raised on some rank (or was skipped after an earlier failure); carries the rank's traceback."""


def run_cases(
    cases: Mapping[str, Callable[[], Any]] | Iterable[tuple[str, Callable[[], Any]]],
) -> dict[str, dict]:
    """Run `cases` in order on this rank and return `{name: {"status", "value" | "traceback", "seconds"}}`.

    Runs inside a worker (the function given to `run_distributed` calls it). After the first failing case
    the rest are skipped: a rank that failed mid-way may have left a collective unmatched, and going on could
    hang the others. Set MG_TEST_CASES to comma-separated name patterns to run only those (debugging).
    """
    items = list(cases.items()) if isinstance(cases, Mapping) else list(cases)
    only = [p for p in os.environ.get("MG_TEST_CASES", "").split(",") if p]
    if only:
        items = [(n, f) for n, f in items if any(fnmatch.fnmatch(n, p) for p in only)]
    out: dict[str, dict] = {}
    failed = None
    for name, fn in items:
        if failed is not None:
            out[name] = {"status": "skipped", "reason": f"case {failed!r} failed earlier in the same launch"}
            continue
        start = time.perf_counter()
        try:
            value = fn()
        except Exception:
            out[name] = {"status": "error", "traceback": traceback.format_exc()}
            failed = name
            continue
        out[name] = {"status": "ok", "value": value, "seconds": time.perf_counter() - start}
    return out


class CaseResults:
    """Per-rank results of `run_cases`, indexed by case name: `results["zero2"]` -> list of values by rank."""

    def __init__(self, per_rank: list[dict[str, dict]]):
        self.per_rank = per_rank

    def __getitem__(self, name: str) -> list[Any]:
        values = []
        for rank, cases in enumerate(self.per_rank):
            if name not in cases:
                raise KeyError(f"no case {name!r} in this launch (cases: {sorted(cases)})")
            entry = cases[name]
            if entry["status"] == "error":
                raise CaseError(f"case {name!r} raised on rank {rank}:\n{entry['traceback']}")
            if entry["status"] == "skipped":
                raise CaseError(f"case {name!r} on rank {rank} was skipped: {entry['reason']}")
            values.append(entry["value"])
        return values

    def timings(self) -> dict[str, float]:
        """Slowest rank's seconds per case that ran."""
        out: dict[str, float] = {}
        for cases in self.per_rank:
            for name, entry in cases.items():
                if entry["status"] == "ok":
                    out[name] = max(out.get(name, 0.0), entry["seconds"])
        return out
