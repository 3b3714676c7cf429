"""A Gradio web app for text-to-video and text-to-image generation with a trained mg pipeline.

The heavy parts (Gradio, MindSpore) load on first use of `build_app`, `Generator` and friends, so
`mg-demo --help` answers at once.
"""

from __future__ import annotations

import importlib
from typing import Any

from mg_demo.__about__ import __version__

_EXPORTS = {
    "build_app": "mg_demo.app",
    "missing_checkpoint_app": "mg_demo.serving",
    "serve": "mg_demo.serving",
    "DemoHandlers": "mg_demo.app",
    "Generator": "mg_demo.generation",
    "Request": "mg_demo.generation",
    "Result": "mg_demo.generation",
    "locate_pipeline": "mg_demo.locate",
    "quickstart_candidates": "mg_demo.locate",
    "ClientShare": "mg_demo.limits",
    "OutputDirError": "mg_demo.outputs",
    "check_output_dir": "mg_demo.outputs",
    "prune_outputs": "mg_demo.outputs",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mg_demo' has no attribute {name!r}")
