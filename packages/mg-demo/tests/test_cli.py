"""`mg-demo` / `python -m mg_demo`: options, finding the checkpoint, and the page shown when there is none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from mg_demo.cli import build_parser
from mg_demo.locate import PIPELINE_FILE, QUICKSTART_ENV, locate_pipeline
from mg_demo.testing import Server

OPTIONS = [
    "--checkpoint",
    "--host",
    "--port",
    "--share",
    "--output-dir",
    "--queue-size",
    "--max-steps",
    "--no-jit",
    "--max-per-client",
    "--timeout",
    "--keep-hours",
    "--max-output-mb",
]


def make_pipeline_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "pipeline.json").write_text("{}")
    return path


def test_explicit_checkpoint_is_a_pipeline_folder_or_a_run_directory(tmp_path):
    from mg_train import pipeline

    assert pipeline.PIPELINE_FILE == PIPELINE_FILE
    folder = make_pipeline_folder(tmp_path / "run" / "pipeline")
    assert locate_pipeline(folder).pipeline == folder
    assert locate_pipeline(tmp_path / "run").pipeline == folder
    with pytest.raises(
        FileNotFoundError, match=r"--checkpoint .*nothing: no pipeline.json in .*nothing/pipeline"
    ):
        locate_pipeline(tmp_path / "nothing")


def test_without_checkpoint_the_quickstart_output_is_used(tmp_path):
    searched_default = tmp_path / "runs" / "quickstart" / "pipeline"
    empty = locate_pipeline(None, env={}, cwd=tmp_path)
    assert empty.pipeline is None and empty.searched == [searched_default]

    make_pipeline_folder(searched_default)
    assert locate_pipeline(None, env={}, cwd=tmp_path).pipeline == searched_default

    # $MG_QUICKSTART_DIR (the quickstart's output_dir, or its pipeline folder) comes first
    other = make_pipeline_folder(tmp_path / "elsewhere" / "pipeline")
    found = locate_pipeline(None, env={QUICKSTART_ENV: str(other.parent)}, cwd=tmp_path)
    assert found.pipeline == other and found.searched == [other.parent, searched_default]


def test_options_and_help():
    parser = build_parser()
    defaults = parser.parse_args([])
    assert (defaults.host, defaults.port, defaults.share, defaults.checkpoint) == (
        "127.0.0.1",
        None,
        False,
        None,
    )
    assert parser.parse_args(["--share"]).share is True
    assert parser.parse_args(["--share", "False"]).share is False
    assert parser.parse_args(["--share", "true", "--port", "7999"]).port == 7999
    with pytest.raises(SystemExit):
        parser.parse_args(["--share", "maybe"])

    script = Path(sys.executable).parent / "mg-demo"
    for command in ([str(script), "--help"], [sys.executable, "-m", "mg_demo", "--help"]):
        out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout
        for option in OPTIONS:
            assert option in out
        assert "mg-train quickstart" in out


def test_a_checkpoint_that_is_not_there_is_a_clear_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mg_demo", "--checkpoint", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"mg-demo: --checkpoint {tmp_path / 'missing'}: no pipeline.json" in done.stderr
    assert "Traceback" not in done.stderr


def test_without_any_checkpoint_the_server_shows_how_to_create_one(tmp_path):
    server = Server([], tmp_path, env={QUICKSTART_ENV: ""})
    try:
        with urllib.request.urlopen(server.url + "config", timeout=30) as response:
            config = json.load(response)
        texts = [c["props"].get("value") for c in config["components"] if c.get("type") == "markdown"]
        page = "\n".join(t for t in texts if isinstance(t, str))
        assert "No checkpoint to serve yet" in page and "mg-train quickstart" in page
        assert "`runs/quickstart/pipeline`" in page and str(tmp_path) not in page  # no local absolute paths
        assert "no checkpoint found" in server.log()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("folder", "message"),
    [
        ("~", "is the home folder or contains it"),
        ("{home}/..", "is the home folder or contains it"),
        ("/", "is a system folder"),
        ("/etc/mg-demo", "is a system folder"),
    ],
)
def test_home_and_system_folders_are_refused_as_output_dir(tmp_path, folder, message):
    home = tmp_path / "home" / "someone"
    home.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "mg_demo", "--output-dir", folder.format(home=home)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(home)},
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "downloaded from the page" in done.stderr
    assert "Traceback" not in done.stderr
