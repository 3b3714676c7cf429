"""The output folder: which folders may be served (everything in it becomes downloadable), the age and size
budget of the files the demo writes there, and how paths are shown to visitors (never as local absolute paths)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

DEFAULT_KEEP_HOURS = 24.0
DEFAULT_MAX_OUTPUT_MB = 2048.0
# `<index>-<prompt slug>-seed<seed>.mp4|png`, as Generator names its results: the only files pruning touches.
RESULT_NAME = re.compile(r"^\d{4,}-.*-seed\d+\.(mp4|png)$")
# Served as a whole, these would expose the machine: refused exactly (they hold other people's files) ...
SYSTEM_FOLDERS = ("/", "/home", "/root", "/tmp", "/var", "/opt", "/srv", "/mnt", "/media", "/run")
# ... and refused with everything under them.
SYSTEM_TREES = ("/etc", "/proc", "/sys", "/dev", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")


class OutputDirError(ValueError):
    """An output folder the demo must not serve."""


def check_output_dir(path: str | os.PathLike) -> Path:
    """`path` resolved, or OutputDirError if it is a home or system folder: the demo makes its output folder
    downloadable, so `--output-dir ~` would publish the home folder."""
    resolved = Path(path).expanduser().resolve()
    system = {Path(folder) for folder in SYSTEM_FOLDERS} | {Path(tempfile.gettempdir()).resolve()}
    trees = [Path(folder) for folder in SYSTEM_TREES]
    if resolved in system or any(resolved == tree or tree in resolved.parents for tree in trees):
        raise OutputDirError(
            f"--output-dir {path}: {resolved} is a system folder; everything in the output folder can be "
            "downloaded from the page: use a folder of its own"
        )
    home = Path.home().expanduser().resolve()
    if resolved == home or resolved in home.parents:
        raise OutputDirError(
            f"--output-dir {path}: {resolved} is the home folder or contains it; everything in the output "
            f"folder can be downloaded from the page: use a folder of its own, e.g. {resolved / 'mg-demo-out'}"
        )
    return resolved


def prune_outputs(
    folder: Path,
    keep_seconds: float,
    max_bytes: float,
    keep: Path | None = None,
    now: float | None = None,
) -> list[Path]:
    """Delete results (files named as Generator names them) older than `keep_seconds`, then the oldest ones
    until the rest fit in `max_bytes`; `keep` (the newest result) is never deleted. Returns what was deleted."""
    now = time.time() if now is None else now
    results = []
    for path in folder.iterdir():
        if not RESULT_NAME.match(path.name) or not path.is_file():
            continue
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        results.append((stat.st_mtime, stat.st_size, path))
    results.sort()  # oldest first
    deleted, total = [], sum(size for _, size, _ in results)
    for mtime, size, path in results:
        if keep is not None and path == keep:
            continue
        if now - mtime > keep_seconds or total > max_bytes:
            path.unlink(missing_ok=True)
            deleted.append(path)
            total -= size
    return deleted


def public_path(path: str | os.PathLike, cwd: str | os.PathLike | None = None) -> str:
    """How a local path is shown on the page: relative to the folder the demo runs in when it is under it,
    else its last two parts; the visitor never sees the machine's folder layout."""
    path = Path(path)
    base = Path.cwd() if cwd is None else Path(cwd)
    try:
        return path.resolve().relative_to(base.resolve()).as_posix() or "."
    except ValueError:
        return "/".join(("…", *path.parts[-2:]))
