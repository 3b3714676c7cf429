"""Serving: the queue and launch settings shared by every page, and the page shown when there is no checkpoint.

Imports only Gradio (not MindSpore), so the no-checkpoint page starts quickly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import gradio as gr

from mg_demo.locate import CREATE_COMMAND
from mg_demo.outputs import public_path

TITLE = "mg · Movie Gen Video demo"
# System fonts only: Gradio's default theme fetches Google Fonts, which offline machines cannot reach.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)


def missing_checkpoint_app(searched: Sequence[Path]) -> gr.Blocks:
    """The page shown when no checkpoint was given and the quickstart has not produced one."""
    places = "\n".join(f"- `{public_path(path)}`" for path in searched)  # no local absolute paths on the page
    text = f"""# {TITLE}

## No checkpoint to serve yet

The demo needs a trained pipeline and found none. It looked in (relative to the folder it was started in):

{places}

Create one with the quickstart, which trains a small model on synthetic clips on this machine's CPU and writes
its pipeline to `runs/quickstart/pipeline` under the current directory:

```bash
{CREATE_COMMAND}
```

(the repository README's first command runs the quickstart too). Then start the demo again from the same
directory with `mg-demo`, or point it at any training run or pipeline folder:

```bash
mg-demo --checkpoint runs/quickstart
```
"""
    with gr.Blocks(title=f"{TITLE}: no checkpoint", analytics_enabled=False) as app:
        gr.Markdown(text, elem_id="missing-checkpoint")
    return app


def serve(
    app: gr.Blocks,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    allowed_paths: Sequence[str | os.PathLike] = (),
    queue_size: int | None = 100,
    block: bool = True,
) -> gr.Blocks:
    """Queue (one generation at a time, at most `queue_size` waiting) and launch; with block=False the server
    runs in a background thread (`app.local_url` is its address, `app.close()` stops it)."""
    app.queue(max_size=queue_size, default_concurrency_limit=1)
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        allowed_paths=[str(path) for path in allowed_paths],
        theme=THEME,
        prevent_thread_lock=not block,
        quiet=not block,
    )
    return app
