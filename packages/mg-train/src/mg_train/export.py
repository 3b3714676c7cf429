"""`mg-train export`: a training checkpoint (any layout) -> a model folder (`config.json` + `model.safetensors`)
that `from_pretrained`, `mg-train sample` and the demo read.

The weights are streamed one tensor at a time: each is rebuilt from the ranks' pieces and written before the next
is read, so exporting a 30B model needs the memory of its largest tensor, not of the model. With EMA in the
checkpoint the EMA weights are exported (`weights="raw"` exports the trained weights instead). The model's kind
and config come from the checkpoint's manifest (recorded by the task that trained it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from mindspore import Tensor

from mg_data.atomic import atomic_dir
from mg_parallel.safetensors_io import TensorSpec, write_safetensors
from mg_train import paths
from mg_train.checkpoint import Checkpoint, CheckpointManager
from mg_train.config.loader import ConfigError
from mg_train.train_state import full_weights

MODEL_FILES = ("config.json", "model.safetensors")
PT2V_FILES = ("transformer", "vision", "reference_projection.safetensors")
EDIT_FILES = ("transformer", "task_embedding.safetensors", "edit.json")


def _format_of(kind: str | None):
    """(write_model_files, config class) of the package that owns a model kind's folder format."""
    if kind == "tae":
        from mg_tae.checkpoint import write_model_files
        from mg_tae.config import TAEConfig

        return write_model_files, TAEConfig
    from mg_transformer.config import TransformerConfig
    from mg_transformer.pretrained import write_model_files

    return write_model_files, TransformerConfig


def write_model_files(
    folder: Path, checkpoint: Checkpoint, weights: Literal["ema", "raw"] = "ema"
) -> dict[str, Any]:
    """Write `config.json` and `model.safetensors` of the checkpoint's model into an existing `folder`, in the
    format of the package that owns the model (its `write_model_files`), the weights streamed."""
    info = checkpoint.manifest.get("model") or {}
    if not info.get("config"):
        raise ValueError(
            f"{checkpoint.path}: the manifest records no model config (a checkpoint of mg-train 0.4?); export "
            "it by resuming the run for zero steps with mg-train 0.5 first"
        )
    if info.get("kind") == "pt2v":
        write_personalized_files(folder, checkpoint, info, weights)
        return info
    if info.get("kind") == "edit":
        write_edit_files(folder, checkpoint, info, weights)
        return info
    write_files, config_class = _format_of(info.get("kind"))
    config = config_class.from_dict(info["config"], source=f"{checkpoint.path}/manifest.json")
    specs, read, close = full_weights(checkpoint, ema=weights == "ema")
    try:
        tensors = [TensorSpec(name, spec.full_shape, np.dtype(spec.dtype)) for name, spec in specs]
        write_files(
            folder, config, lambda path, metadata: write_safetensors(path, tensors, read, metadata=metadata)
        )
    finally:
        close()
    return info


def write_edit_files(
    folder: Path, checkpoint: Checkpoint, info: dict[str, Any], weights: Literal["ema", "raw"] = "ema"
) -> None:
    """An edit folder (mg_transformer.editing: transformer/, task_embedding.safetensors, edit.json) into an
    existing `folder`, the transformer streamed one tensor at a time."""
    from mg_transformer.config import TransformerConfig
    from mg_transformer.editing import TASK_TENSORS, TRANSFORMER_DIR, write_edit_parts
    from mg_transformer.pretrained import write_model_files as write_transformer_files

    config = TransformerConfig.from_dict(
        info["config"]["transformer"], source=f"{checkpoint.path}/manifest.json"
    )
    specs, read, close = full_weights(checkpoint, ema=weights == "ema")
    prefix = "transformer."
    inner = [(name[len(prefix) :], spec) for name, spec in specs if name.startswith(prefix)]
    try:
        tensors = [TensorSpec(n, spec.full_shape, np.dtype(spec.dtype)) for n, spec in inner]
        (folder / TRANSFORMER_DIR).mkdir()
        write_transformer_files(
            folder / TRANSFORMER_DIR,
            config,
            lambda path, metadata: write_safetensors(
                path, tensors, lambda n: read(prefix + n), metadata=metadata
            ),
        )
        own = {key: read(name) for key, name in TASK_TENSORS.items()}
        write_edit_parts(folder, info["config"]["tasks"], info["config"]["task_tokens"], own)
    finally:
        close()


def write_personalized_files(
    folder: Path, checkpoint: Checkpoint, info: dict[str, Any], weights: Literal["ema", "raw"] = "ema"
) -> None:
    """A PT2V folder (mg_transformer.personalized: transformer/, vision/, reference_projection.safetensors)
    into an existing `folder`: the transformer streamed one tensor at a time, the vision tower and the projection
    (small next to it) built whole."""
    from mg_transformer.config import TransformerConfig
    from mg_transformer.personalized import TRANSFORMER_DIR, write_reference_parts
    from mg_transformer.pretrained import write_model_files as write_transformer_files
    from mg_transformer.vision import CLIPVisionConfig, CLIPVisionEncoder

    source = f"{checkpoint.path}/manifest.json"
    config = TransformerConfig.from_dict(info["config"]["transformer"], source=source)
    vision = CLIPVisionEncoder(CLIPVisionConfig(**info["config"]["vision"]))
    specs, read, close = full_weights(checkpoint, ema=weights == "ema")
    parts: dict[str, list[tuple[str, Any]]] = {"transformer": [], "vision": [], "reference_projection": []}
    for name, spec in specs:
        part, _, inner = name.partition(".")
        if part not in parts:
            raise ValueError(f"{checkpoint.path}: {name} belongs to no part of a PT2V model")
        parts[part].append((inner, spec))
    try:
        tensors = [TensorSpec(n, spec.full_shape, np.dtype(spec.dtype)) for n, spec in parts["transformer"]]
        (folder / TRANSFORMER_DIR).mkdir()
        write_transformer_files(
            folder / TRANSFORMER_DIR,
            config,
            lambda path, metadata: write_safetensors(
                path, tensors, lambda n: read(f"transformer.{n}"), metadata=metadata
            ),
        )
        params = dict(vision.parameters_and_names())
        for inner, _ in parts["vision"]:
            params[inner].set_data(Tensor(read(f"vision.{inner}").astype(np.float32)))
        projection = {n: read(f"reference_projection.{n}") for n, _ in parts["reference_projection"]}
        write_reference_parts(folder, vision, projection)
    finally:
        close()


def export_model(checkpoint: str | Path, output: str | Path, weights: Literal["ema", "raw"] = "ema") -> Path:
    """Write the model of `checkpoint` (a checkpoint folder or a run directory: its latest) to `output`."""
    path = Path(checkpoint)
    if not (path / "state.json").is_file():
        latest = CheckpointManager(path / paths.CHECKPOINTS).latest() if path.is_dir() else None
        if latest is None:
            raise ConfigError(
                f"checkpoint={checkpoint}: not a checkpoint or a run directory with checkpoints"
            )
        path = latest
    opened = Checkpoint.open(path)
    with atomic_dir(output, replaces=MODEL_FILES + PT2V_FILES + EDIT_FILES) as tmp:
        write_model_files(tmp, opened, weights)
    return Path(output)


def run(cfg) -> Path:
    """The `mg-train export` command."""
    cfg.check()
    out = export_model(cfg.checkpoint, cfg.output_dir, cfg.weights)
    if (out / "vision").is_dir():
        written = "transformer/, vision/ and reference_projection.safetensors (PT2V)"
    elif (out / "edit.json").is_file():
        written = "transformer/, task_embedding.safetensors and edit.json (Edit)"
    else:
        written = "config.json and model.safetensors"
    print(f"export: wrote {written} into {out}", flush=True)
    return out
