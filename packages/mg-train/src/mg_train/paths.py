"""Where things live in a run directory, and how a "model folder or run directory" argument is resolved."""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
TAE_DIR = "tae"  # final TAE of a tae-train run (save_pretrained)
TRANSFORMER_DIR = "transformer"  # final transformer of a train run (save_pretrained)
PIPELINE_DIR = "pipeline"  # sampling pipeline of a train run (MovieGenPipeline.save_pretrained)
PT2V_DIR = "pt2v"  # final PT2V model of a personalised train run (PersonalizedTransformer.save_pretrained)
EDIT_DIR = "edit"  # final edit model of an editing train run (EditTransformer.save_pretrained)


def resolve_model_dir(path: str | Path, kind: str) -> Path:
    """A folder with config.json (a model saved with save_pretrained), or a run directory holding `<kind>/`
    or `pipeline/<kind>/` (or, for the transformer, `pt2v/<kind>/` or `edit/<kind>/`). `kind` is 'tae' or 'transformer'."""
    path = Path(path)
    for candidate in (
        path,
        path / kind,
        path / PIPELINE_DIR / kind,
        path / PT2V_DIR / kind,
        path / EDIT_DIR / kind,
    ):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"{path}: no {kind} model here (expected config.json in {path}, {path / kind} or {path / PIPELINE_DIR / kind})"
    )
