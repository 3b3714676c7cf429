"""The output folder: refused home/system folders, the age and size budget of results, paths as shown."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from mg_demo.outputs import OutputDirError, check_output_dir, prune_outputs, public_path


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "users" / "someone"
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def test_home_system_and_temp_folders_are_refused(home):
    for folder in (
        home,
        home.parent,
        home.parent.parent,
        "~",
        "/",
        "/etc",
        "/usr/share/x",
        tempfile.gettempdir(),
    ):
        with pytest.raises(OutputDirError, match="downloaded from the page"):
            check_output_dir(folder)
    assert check_output_dir("~/samples") == home / "samples"
    assert check_output_dir(home / "a" / ".." / "b") == home / "b"


def write(folder: Path, name: str, size: int, age_hours: float, now: float) -> Path:
    path = folder / name
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age_hours * 3600, now - age_hours * 3600))
    return path


def test_results_beyond_the_age_or_size_budget_are_deleted_oldest_first(tmp_path):
    now = 1_000_000.0
    old = write(tmp_path, "0001-a-red-circle-seed1.mp4", 100, 30, now)
    mid = write(tmp_path, "0002-a-blue-square-seed2.png", 100, 3, now)
    young = write(tmp_path, "0003-x-seed3.mp4", 100, 2, now)
    newest = write(tmp_path, "0004-x-seed4.mp4", 100, 1, now)
    other = write(tmp_path, "notes.mp4", 100, 99, now)  # not named like a result: never touched
    # 24 h keeps all but the 30-hour-old one; 250 bytes then keeps the two youngest of the rest
    deleted = prune_outputs(tmp_path, 24 * 3600, 250, keep=newest, now=now)
    assert sorted(deleted) == sorted([old, mid])
    assert sorted(tmp_path.iterdir()) == sorted([young, newest, other])
    # a budget below one file still keeps the newest result
    assert prune_outputs(tmp_path, 24 * 3600, 0, keep=newest, now=now) == [young]
    assert newest.exists() and other.exists()


def test_paths_are_shown_relative_or_shortened(tmp_path):
    assert (
        public_path(tmp_path / "runs" / "quickstart" / "pipeline", cwd=tmp_path) == "runs/quickstart/pipeline"
    )
    assert public_path(tmp_path / "a" / "pipeline", cwd=tmp_path / "elsewhere") == "…/a/pipeline"
