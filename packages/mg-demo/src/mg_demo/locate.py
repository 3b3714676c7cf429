"""Which pipeline the demo serves: the `--checkpoint` given, else the quickstart's output if it exists."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mg_train.config.schema import QuickstartConfig
from mg_train.paths import PIPELINE_DIR

# mg_train.pipeline.PIPELINE_FILE (a test checks they agree): importing that module loads MindSpore, which
# would make a mistyped --checkpoint take seconds to report.
PIPELINE_FILE = "pipeline.json"
QUICKSTART_ENV = "MG_QUICKSTART_DIR"
CREATE_COMMAND = "mg-train quickstart"


@dataclass
class Located:
    """The pipeline folder found (None if none), and every place that was looked at, in order."""

    pipeline: Path | None
    searched: list[Path] = field(default_factory=list)


def quickstart_candidates(
    env: Mapping[str, str] | None = None, cwd: str | os.PathLike | None = None
) -> list[Path]:
    """Where the quickstart leaves its pipeline: `$MG_QUICKSTART_DIR` (when set), then
    `runs/quickstart/pipeline` under the current directory (`mg-train quickstart`'s default output)."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else Path(cwd)
    candidates = []
    if env.get(QUICKSTART_ENV):
        candidates.append(Path(env[QUICKSTART_ENV]).expanduser())
    candidates.append(cwd / QuickstartConfig().output_dir / PIPELINE_DIR)
    return candidates


def pipeline_folder(path: Path) -> Path | None:
    """`path` itself or its `pipeline/` sub-folder, whichever holds a pipeline file."""
    for candidate in (path, path / PIPELINE_DIR):
        if (candidate / PIPELINE_FILE).is_file():
            return candidate
    return None


def locate_pipeline(
    checkpoint: str | os.PathLike | None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> Located:
    """Resolve `--checkpoint` (a pipeline folder or a run directory with `pipeline/`).

    An explicit checkpoint that holds no pipeline is an error (FileNotFoundError naming both places looked
    at); without one, the quickstart's locations are tried and `Located.pipeline` is None if none has one.
    """
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        found = pipeline_folder(path)
        if found is None:
            raise FileNotFoundError(
                f"--checkpoint {path}: no {PIPELINE_FILE} in {path} or {path / PIPELINE_DIR}; pass a pipeline "
                f"folder or a training run directory (e.g. runs/quickstart), or create one with `{CREATE_COMMAND}`"
            )
        return Located(found, [path])
    searched = quickstart_candidates(env, cwd)
    for candidate in searched:
        found = pipeline_folder(candidate)
        if found is not None:
            return Located(found, searched)
    return Located(None, searched)
