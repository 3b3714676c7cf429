"""Progress lines carry step, rate, ETA and metrics; every update lands in the JSONL file."""

from __future__ import annotations

import io
import json

import pytest

from mg_train.progress import Progress, format_duration


def test_lines_every_n_steps_and_jsonl_for_every_step(tmp_path):
    out = io.StringIO()
    progress = Progress(total=6, desc="train", jsonl_path=tmp_path / "m.jsonl", every=3, stream=out)
    for step in range(1, 7):
        progress.update(step, loss=1.0 / step, lr=0.1)
    progress.close()
    lines = out.getvalue().strip().splitlines()
    assert [line.split()[1] for line in lines] == ["3/6", "6/6"]
    assert "loss=0.3333" in lines[0] and "step/s" in lines[0]
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[3]["loss"] == 0.25


def test_steps_advancing_by_batches_still_print_a_line_per_every_steps():
    """cache-latents advances by batches of varying size (1, then 4s): a line whenever a multiple of `every`
    was passed, not only when one is hit exactly."""
    out = io.StringIO()
    progress = Progress(total=21, desc="cache", every=5, stream=out)
    for step in (1, *range(5, 22, 4)):  # 1, 5, 9, 13, 17, 21
        progress.update(step)
    assert [line.split()[1] for line in out.getvalue().splitlines()] == ["5/21", "13/21", "17/21", "21/21"]


def test_format_duration():
    assert format_duration(59.6) == "01:00"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(float("inf")) == "?"


def test_non_finite_metrics_are_written_as_null_with_their_names(tmp_path):
    """metrics.jsonl stays valid JSON (no bare NaN/Infinity): the value is null and `nonfinite` names it."""
    import json
    import math

    path = tmp_path / "m.jsonl"
    progress = Progress(3, "x", jsonl_path=path, stream=io.StringIO())
    progress.update(1, loss=float("nan"), grad_norm=math.inf, lr=0.1)
    progress.update(2, loss=0.5)
    progress.close()
    lines = path.read_text().splitlines()
    first = json.loads(lines[0], parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
    assert first["loss"] is None and first["grad_norm"] is None and first["lr"] == 0.1
    assert first["nonfinite"] == ["loss", "grad_norm"]
    assert "nonfinite" not in json.loads(lines[1])
