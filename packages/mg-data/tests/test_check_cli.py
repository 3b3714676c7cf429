"""`check_manifest` and the `mg-data` command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from mg_data import BucketConfig, FrameSampling, check_manifest, load_manifest, write_manifest
from mg_data.cli import main


@pytest.fixture
def messy(tmp_path, synth):
    """The synthetic set copied with one truncated and one missing file, and a 16:9 clip."""
    root = tmp_path / "data"
    shutil.copytree(synth.root, root)
    rows = [r.to_dict() for r in load_manifest(root / "all.csv").rows]
    clip = (root / rows[0]["video"]).read_bytes()
    (root / rows[1]["video"]).write_bytes(clip[: len(clip) // 3])
    (root / rows[2]["video"]).unlink()
    write_manifest(root / "messy.csv", rows)
    return root


def test_check_report_counts_problems_buckets_and_drops(messy):
    config = BucketConfig.grid(resolution=64, aspect_ratios=["1:1", "16:9"], num_frames=[8, 32], batch_size=2)
    report = check_manifest(messy / "messy.csv", buckets=config, sampling=FrameSampling(stride=1))
    assert report.rows == 46 and report.videos == 38 and report.images == 6
    assert len(report.unreadable) == 2 and not report.ok
    assert any("line 3: videos/000001.mp4" in where for where in report.unreadable)
    assert any("file not found" in reason for reason in report.unreadable.values())
    # 38 readable 16-frame clips fit the 8-frame bucket (the 32-frame one is too long); images have no bucket
    assert report.buckets == {"8f_64x64": 38, "8f_48x80": 0, "32f_64x64": 0, "32f_48x80": 0}
    assert report.dropped == {"no image bucket": 6, "unreadable": 2}
    assert report.resolutions == {"64x64": 44} and report.fps == {8.0: 38} and set(report.frames) == {16}
    deep = check_manifest(messy / "messy.csv", deep=True)  # decodes every frame: same verdicts here
    assert deep.unreadable == report.unreadable and deep.videos == 38
    text = report.format()
    for needle in ("unreadable: 2", "8f_64x64", "<- empty", "no image bucket: 6", "PROBLEMS FOUND"):
        assert needle in text


def test_check_writes_a_manifest_with_metadata(messy, tmp_path):
    rows = [{"video": r.video, "caption": r.caption} for r in load_manifest(messy / "messy.csv").rows]
    write_manifest(messy / "bare.csv", rows)
    check_manifest(messy / "bare.csv", write_to=messy / "with_meta.csv")
    enriched = load_manifest(messy / "with_meta.csv")
    assert len(enriched) == 44 and enriched.has_metadata
    by_name = {r.video: r for r in enriched.rows}
    assert (by_name["videos/000005.mp4"].num_frames, by_name["videos/000005.mp4"].fps) == (16, 8.0)
    assert by_name["images/000000.png"].num_frames == 1


def test_check_reports_missing_cache_entries(synth, tmp_path, text_cache_writer):
    from mg_data import LatentCacheWriter

    rows = load_manifest(synth.train_manifest).rows
    text_cache_writer(
        tmp_path / "text",
        {r.video.rsplit(".", 1)[0] + ".npz": {"ul2": 2} for r in rows[1:]},
        {"ul2": 4},
        {"ul2": 8},
    )
    writer = LatentCacheWriter(tmp_path / "lat", 1.0, 0.0, latent_channels=4)
    import numpy as np

    for r in rows[:-2]:
        writer.write(r.video, np.zeros((4, 1, 8, 8)), np.ones((4, 1, 8, 8)))
    report = check_manifest(synth.train_manifest, text_cache=tmp_path / "text", latent_cache=tmp_path / "lat")
    assert report.missing_text == {"ul2": 1} and report.missing_latents == 2 and not report.ok
    assert any("__null__" in p for p in report.cache_problems)


def test_cli_synth_then_check(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "6", "--size", "32x48", "--frames", "4", "--seed", "2",
                 "--holdout", "a red circle moving left", "--images", "2", "--quiet"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "train:" in out and (tmp_path / "s" / "videos" / "000005.mp4").is_file()
    (tmp_path / "b.yaml").write_text(
        "grid:\n  resolution: 32\n  aspect_ratios: ['3:2']\n  num_frames: [4]\n  batch_size: 2\n  size_mode: short_side\n"
    )
    code = main(["check", str(tmp_path / "s" / "all.csv"), "--buckets", str(tmp_path / "b.yaml"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] and report["rows"] == 8
    assert report["buckets"] == {"4f_32x48": 6} and report["dropped"] == {"no image bucket": 2}
    assert main(["check", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: manifest not found" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "t"), "--holdout", "a pink cloud", "--quiet"]) == 2


def test_console_script_is_installed():
    exe = shutil.which("mg-data", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe is not None
    out = subprocess.run([exe, "check", "--help"], capture_output=True, text=True, check=True).stdout
    for option in (
        "--root",
        "--buckets",
        "--stride",
        "--fps",
        "--short-policy",
        "--text-cache",
        "--latent-cache",
        "--deep",
        "--write-manifest",
    ):
        assert option in out
