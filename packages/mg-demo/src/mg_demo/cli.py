"""`mg-demo` / `python -m mg_demo`: serve the Gradio app for a checkpoint (or the quickstart's output)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from mg_demo.limits import DEFAULT_PER_CLIENT, DEFAULT_TIMEOUT
from mg_demo.locate import CREATE_COMMAND, QUICKSTART_ENV
from mg_demo.outputs import DEFAULT_KEEP_HOURS, DEFAULT_MAX_OUTPUT_MB, OutputDirError, check_output_dir


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: `kind` of the text, refused unless greater than zero."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mg-demo",
        description="Serve a web app for text-to-video and text-to-image generation with an mg pipeline.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"Without --checkpoint the demo serves the quickstart's pipeline: ${QUICKSTART_ENV} if set,\n"
            f"else runs/quickstart/pipeline under the current directory. If there is none, it serves\n"
            f"a page that says how to create one: {CREATE_COMMAND}"
        ),
    )
    parser.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="pipeline folder, or a training run directory that contains pipeline/ (default: the quickstart's)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 serves the network)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port (default: the first free one from 7860 on)"
    )
    parser.add_argument(
        "--share",
        type=parse_bool,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="also open a public Gradio share link (needs internet; default: false)",
    )
    parser.add_argument(
        "--output-dir",
        metavar="DIR",
        help="where generated mp4/png files are written, all of it downloadable from the page, so not a home or "
        "system folder (default: a new temporary folder)",
    )
    parser.add_argument(
        "--keep-hours",
        type=positive(float),
        default=DEFAULT_KEEP_HOURS,
        help=f"delete results older than this (default: {DEFAULT_KEEP_HOURS:g})",
    )
    parser.add_argument(
        "--max-output-mb",
        type=positive(float),
        default=DEFAULT_MAX_OUTPUT_MB,
        help=f"delete the oldest results beyond this total size (default: {DEFAULT_MAX_OUTPUT_MB:g})",
    )
    parser.add_argument(
        "--queue-size",
        type=int,
        default=100,
        help="requests that may wait in the queue at once; later ones are told the queue is full (default: 100)",
    )
    parser.add_argument(
        "--max-per-client",
        type=positive(int),
        default=DEFAULT_PER_CLIENT,
        help=f"requests one client address may have waiting or running at once (default: {DEFAULT_PER_CLIENT})",
    )
    parser.add_argument(
        "--timeout",
        type=positive(float),
        default=DEFAULT_TIMEOUT,
        help="seconds a request may take from joining the queue to its file; a longer one is stopped at the next "
        f"sampling step (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=200,
        help="largest number of sampling steps a user may ask for (default: 200)",
    )
    parser.add_argument(
        "--no-jit",
        action="store_true",
        help="run the transformer eagerly (PyNative) instead of compiling it with mindspore.jit",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local demo

    from mg_demo.locate import locate_pipeline

    try:
        if args.output_dir is not None:
            check_output_dir(args.output_dir)
        located = locate_pipeline(args.checkpoint)
    except (FileNotFoundError, OutputDirError) as err:
        print(f"mg-demo: {err}", file=sys.stderr)
        return 2

    from mg_demo.serving import missing_checkpoint_app, serve

    if located.pipeline is None:
        places = ", ".join(str(path) for path in located.searched)
        print(
            f"mg-demo: no checkpoint found (looked in {places}); serving a page that says how to create one",
            flush=True,
        )
        serve(missing_checkpoint_app(located.searched), args.host, args.port, args.share)
        return 0

    from mg_demo.app import build_app
    from mg_demo.generation import Generator
    from mg_train.pipeline import MovieGenPipeline
    from mg_train.runtime import setup_mindspore

    device = setup_mindspore()  # PyNative; synchronous op launch on CPU (~10x faster small ops)
    print(f"mg-demo: loading {located.pipeline} on {device}", flush=True)
    pipeline = MovieGenPipeline.from_pretrained(located.pipeline, jit=not args.no_jit)
    output_dir = args.output_dir or tempfile.mkdtemp(prefix="mg-demo-")
    generator = Generator(
        pipeline,
        output_dir,
        max_steps=args.max_steps,
        checkpoint=located.pipeline,
        keep_hours=args.keep_hours,
        max_output_mb=args.max_output_mb,
        timeout=args.timeout,
    )
    print(f"mg-demo: results go to {generator.output_dir}", flush=True)
    serve(
        build_app(generator, max_per_client=args.max_per_client),
        args.host,
        args.port,
        args.share,
        allowed_paths=[generator.output_dir],
        queue_size=args.queue_size,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
