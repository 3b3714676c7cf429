"""Atomic writes: targets appear whole or not at all, failures leave no trace, folders swap in one step, a
folder of other data is never deleted, and every package's copy of the helper is the same file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mg_data.atomic import atomic_dir, atomic_file, write_text

REPO = Path(__file__).resolve().parents[3]
COPIES = [
    "packages/mg-tae/src/mg_tae/_atomic.py",
    "packages/mg-transformer/src/mg_transformer/_atomic.py",
    "packages/mg-parallel/src/mg_parallel/_atomic.py",
]


def test_a_file_replaces_its_target_only_when_complete(tmp_path):
    target = write_text(tmp_path / "sub" / "a.json", "old")
    with pytest.raises(RuntimeError, match="boom"), atomic_file(target) as tmp:
        tmp.write_text("half")
        assert target.read_text() == "old"  # not visible while being written
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]  # temporary removed
    with atomic_file(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json" and f"-{os.getpid()}-" in tmp.name
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) & stat.S_IRGRP  # usual permissions, not mkstemp's 0600


def test_a_folder_swaps_in_whole_and_keeps_the_old_one_on_failure(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("1")
        (tmp / "weights").write_text("1")
        assert not target.exists()
    inode = target.stat().st_ino
    with pytest.raises(RuntimeError), atomic_dir(target, replaces={"config.json", "weights"}) as tmp:
        (tmp / "config.json").write_text("2")
        raise RuntimeError("crash between the two files")
    assert (target / "config.json").read_text() == "1" and (target / "weights").read_text() == "1"
    with atomic_dir(target, replaces={"config.json", "weights"}) as tmp:
        (tmp / "config.json").write_text("2")
        (tmp / "weights").write_text("2")
    assert {p.name: p.read_text() for p in target.iterdir()} == {"config.json": "2", "weights": "2"}
    assert target.stat().st_ino != inode  # a new folder took the old one's place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporaries, no old copy


def test_a_folder_of_other_data_is_never_replaced(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "checkpoints").mkdir()
    (target / "config.json").write_text("x")
    with (
        pytest.raises(FileExistsError, match=r"holds \['checkpoints'\]"),
        atomic_dir(target, replaces={"config.json"}),
    ):
        pass
    assert (target / "checkpoints").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("copy", COPIES)
def test_every_package_ships_the_same_helper(copy):
    mine = Path(__file__).resolve().parents[1] / "src" / "mg_data" / "atomic.py"
    other = REPO / copy
    if not other.is_file():
        pytest.skip(f"{copy} is not here (mg-data tested outside the repository)")
    assert other.read_text() == mine.read_text(), f"{copy} drifted from mg_data/atomic.py"


def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    """A writer killed mid-write leaves its temporary; only those whose process is gone (on this host) go."""
    import subprocess
    import sys

    from mg_data.atomic import remove_dead_temporaries, temp_prefix

    code = (
        "import sys, time; from pathlib import Path; from mg_data.atomic import atomic_dir\n"
        "with atomic_dir(Path(sys.argv[1]) / 'model') as tmp:\n"
        "    (tmp / 'w.bin').write_bytes(b'x'); print('ready', flush=True); time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    live = [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    assert len(live) == 1 and live[0].name.startswith(".model.tmp-")
    assert remove_dead_temporaries(tmp_path) == []  # its writer still runs
    writer.kill()
    writer.wait()
    other_host = tmp_path / ".model.tmp-elsewhere-1-abc"
    other_host.mkdir()
    mine = tmp_path / (temp_prefix(tmp_path / "a.json") + "xyz.json")
    mine.write_text("{}")  # this process's own: running
    assert remove_dead_temporaries(tmp_path) == live
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other_host.name, mine.name])
