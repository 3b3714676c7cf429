"""The README's command chain (synthetic data -> TAE -> evaluation -> caches -> transformer -> samples) and its
msrun command run exactly as written, in a fresh folder, and leave what they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mg_testing.readme import check_all_blocks_run, run_block, shell_blocks
from mg_train.testing import run_metrics

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(starting: str):
    found = [b for b in shell_blocks(README) if b.commands and b.commands[0].startswith(starting)]
    assert len(found) == 1, f"expected one block starting with {starting!r} in {README}"
    return found[0]


def test_every_chain_and_launch_command_is_run_here():
    runs = lambda block: any(c.startswith(("mg-data", "msrun", "mg-train plan")) for c in block.commands)  # noqa: E731
    ran = [
        _block("mg-data synth --out"),
        _block("mg-data synth --task editing"),
        _block("msrun"),
        _block("mg-train plan"),
    ]
    check_all_blocks_run(README, ran, about=runs)


def test_the_plan_commands_as_written(tmp_path):
    """The reference's two runs fit 64 GB cards, with the step times the README's table states."""
    done = run_block(_block("mg-train plan"), tmp_path)
    assert len(done) == 3
    outputs = [d.stdout for d in done]
    rows = {}
    for out in outputs:
        mine = next(line for line in out.splitlines() if line.endswith("<- the config's layout"))
        rows[mine.split(",")[0]] = mine.split()
    table = README.read_text()
    for layout, memory, seconds in (("dp8", "43.4", "0.77"), ("sp8", "33.1", "4.58")):
        cells = rows[layout]
        assert "yes" in cells, cells
        assert f"| {memory} GiB | {seconds} |" in table
        total, step = cells[cells.index("yes") - 1], cells[-6]
        assert (total, step) == (memory, seconds), (layout, cells)
    assert "cp2 x sp4 x tp2" in outputs[2] and " yes " in next(
        line for line in outputs[2].splitlines() if line.endswith("<- the config's layout")
    )


@pytest.mark.multiprocess
def test_the_command_chain_and_the_msrun_command_as_written(tmp_path):
    run_block(_block("mg-data synth --out"), tmp_path)
    assert (tmp_path / "runs/tae/tae/model.safetensors").is_file()  # a run folder keeps its final TAE in tae/
    metrics = json.loads((tmp_path / "runs/tae_eval/metrics.json").read_text())
    assert metrics["psnr"] > 0 and len(metrics["per_video"]) > 0
    assert (tmp_path / "cache/latents/meta.json").is_file() and (tmp_path / "cache/text/meta.json").is_file()
    assert [m["step"] for m in run_metrics(tmp_path / "runs/cpu_debug") if "loss" in m] == [1, 2, 3, 4]
    assert (tmp_path / "runs/cpu_debug/pipeline/pipeline.json").is_file()
    assert list((tmp_path / "samples").glob("*.mp4"))

    run_block(_block("msrun"), tmp_path)
    rows = [m for m in run_metrics(tmp_path / "runs/cpu_debug_sp2") if "loss" in m]
    assert [m["step"] for m in rows] == [1, 2, 3, 4]
    assert (tmp_path / "runs/cpu_debug_sp2/transformer/model.safetensors").is_file()
    assert "world 2 = dp 1 x cp 1 x sp 2 x tp 1" in (tmp_path / "runs/msrun_logs/worker_0.log").read_text()


@pytest.mark.multiprocess
def test_the_edit_chain_as_written(tmp_path):
    """The README's Movie Gen Edit chain: synthetic editing set, TAE, caches of sources and targets, T2V, the
    edit stage from it, and `mg-train edit` on a source video."""
    run_block(_block("mg-data synth --task editing"), tmp_path)
    assert (tmp_path / "runs/edit/edit/edit.json").is_file()
    assert (tmp_path / "runs/edit/pipeline/task_embedding.safetensors").is_file()
    record = json.loads((tmp_path / "edited.json").read_text())
    assert (record["task"], record["output"]) == ("remove", "edited.mp4")
    from mg_data import read_video

    assert read_video(tmp_path / "edited.mp4").shape == (16, 32, 32, 3)
