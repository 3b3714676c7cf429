"""Progress lines carry step, rate, ETA and metrics; every update lands in the JSONL file."""

from __future__ import annotations

import io
import json

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


def test_format_duration():
    assert format_duration(59.6) == "01:00"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(float("inf")) == "?"
