"""The `mg-data` command: `mg-data synth` writes the synthetic dataset, `mg-data check` scans a manifest."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from mg_data.buckets import BucketConfig
from mg_data.check import check_manifest
from mg_data.editing import EDIT_TASKS, make_editing_dataset
from mg_data.editing import FORMS as EDIT_FORMS
from mg_data.manifest import ManifestError
from mg_data.personalization import make_personalization_dataset
from mg_data.synth import COLORS, DEFAULT_COLORS, DIRECTIONS, SHAPES, make_synthetic_dataset
from mg_data.transforms import SHORT_POLICIES, FrameSampling


def _size(text: str) -> int | tuple[int, int]:
    if "x" in text:
        height, width = text.lower().split("x")
        return int(height), int(width)
    return int(text)


def _add_synth(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write the synthetic captioned video dataset (mp4 + CSV manifests)",
        description="Write N deterministic synthetic clips ('a red circle moving left') as mp4 files under OUT, "
        "with train.csv, val.csv and all.csv manifests holding captions and ground truth "
        "(color, shape, direction, start/end centre).",
    )
    parser.add_argument(
        "--out", required=True, help="output folder (created; existing files are overwritten)"
    )
    parser.add_argument("--n", type=int, default=100, help="number of video clips (default 100)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed, same dataset (default 0)"
    )
    parser.add_argument(
        "--size", type=_size, default=64, help="frame size: S (square) or HxW, even numbers (default 64)"
    )
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate written to the mp4 (default 8)")
    parser.add_argument(
        "--colors",
        nargs="+",
        default=list(DEFAULT_COLORS),
        choices=list(COLORS),
        help="colour vocabulary (default: %(default)s)",
    )
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=list(SHAPES),
        choices=list(SHAPES),
        help="shape vocabulary (default: all)",
    )
    parser.add_argument(
        "--directions",
        nargs="+",
        default=list(DIRECTIONS),
        choices=list(DIRECTIONS),
        help="motion directions (default: all)",
    )
    parser.add_argument(
        "--val-fraction", type=float, default=0.1, help="share of clips put in val.csv (default 0.1)"
    )
    parser.add_argument(
        "--holdout",
        action="append",
        default=[],
        metavar="CAPTION",
        help="a caption that appears only in val.csv (repeatable), e.g. --holdout 'a blue square moving up'",
    )
    parser.add_argument(
        "--images", type=int, default=0, help="also write this many still images ('a red circle') (default 0)"
    )
    parser.add_argument(
        "--travel",
        type=float,
        default=0.6,
        help="distance moved over a clip, as a share of the free space (default 0.6)",
    )
    parser.add_argument(
        "--start-jitter",
        type=float,
        default=1.0,
        help="share of the room along the motion where a clip may start; 0 starts every clip at the edge behind "
        "its motion, so the direction also fixes where the shape is in each frame (default 1)",
    )
    parser.add_argument("--crf", type=int, default=16, help="x264 quality, lower is better (default 16)")
    parser.add_argument(
        "--shape-size",
        type=float,
        nargs=2,
        default=[0.11, 0.15],
        metavar=("LOW", "HIGH"),
        help="range of a shape's radius as a share of the shorter side (default 0.11 0.15)",
    )
    parser.add_argument(
        "--texture-contrast",
        type=float,
        default=1.0,
        help="scales the background texture's contrast; 0 gives flat backgrounds (default 1)",
    )
    parser.add_argument(
        "--task",
        choices=("t2v", "personalization", "editing"),
        default="t2v",
        help="t2v: captioned clips (default); personalization: clips captioned by motion only ('the subject "
        "moving left') with a paired and a cross-paired reference still of their subject per clip (PT2V); "
        "editing: (source, target, instruction) examples for Movie Gen Edit (see --form, --edit-tasks)",
    )
    parser.add_argument(
        "--form",
        choices=EDIT_FORMS,
        default="video",
        help="(editing) image: one-frame pairs (stage I); animated: an image pair under one random camera "
        "motion (stage II); video: clips with moving shapes and their exact edits (default)",
    )
    parser.add_argument(
        "--edit-tasks",
        nargs="+",
        choices=EDIT_TASKS,
        default=list(EDIT_TASKS),
        help="(editing) which edits: recolor, mark, remove, background (default: all)",
    )
    parser.add_argument(
        "--holdout-subject",
        action="append",
        default=[],
        metavar="COLOR:SHAPE",
        help="(personalization) a subject that appears only in val.csv (repeatable), e.g. blue:triangle",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def _subject(text: str) -> tuple[str, str]:
    color, _, shape = text.partition(":")
    if not shape:
        raise ValueError(f"--holdout-subject {text!r}: expected COLOR:SHAPE, e.g. blue:triangle")
    return color, shape


def _common_synth_arguments(args) -> dict:
    """The keyword arguments both synthetic sets take from the command line."""
    return {
        "n": args.n,
        "seed": args.seed,
        "size": args.size,
        "num_frames": args.frames,
        "fps": args.fps,
        "colors": args.colors,
        "shapes": args.shapes,
        "directions": args.directions,
        "val_fraction": args.val_fraction,
        "travel": args.travel,
        "crf": args.crf,
        "shape_size": args.shape_size,
        "texture_contrast": args.texture_contrast,
    }


def _synth(args):
    if args.task == "editing":
        ignored = [
            flag
            for flag, value in (
                ("--holdout", args.holdout),
                ("--images", args.images),
                ("--holdout-subject", args.holdout_subject),
            )
            if value
        ]
        if ignored:
            raise ValueError(f"{', '.join(ignored)} do not apply to --task editing")
        return make_editing_dataset(
            args.out, form=args.form, tasks=args.edit_tasks, **_common_synth_arguments(args)
        )
    if args.task == "personalization":
        ignored = [flag for flag, value in (("--holdout", args.holdout), ("--images", args.images)) if value]
        if ignored:
            raise ValueError(
                f"{', '.join(ignored)} do not apply to --task personalization (use --holdout-subject)"
            )
        subjects = [_subject(text) for text in args.holdout_subject]
        return make_personalization_dataset(
            args.out, holdout_subjects=subjects, **_common_synth_arguments(args)
        )
    if args.holdout_subject:
        raise ValueError("--holdout-subject applies to --task personalization only")
    return make_synthetic_dataset(
        args.out,
        holdout_captions=args.holdout,
        num_images=args.images,
        start_jitter=args.start_jitter,
        verbose=not args.quiet,
        **_common_synth_arguments(args),
    )


def _add_check(subparsers) -> None:
    parser = subparsers.add_parser(
        "check",
        help="scan a manifest: unreadable files, durations, resolutions, fps, buckets, drops, caches",
        description="Open every file of MANIFEST (first and last frame, or all with --deep) and print a report. "
        "Exit code 0: all readable and caches complete; 1: problems found; 2: the manifest itself is malformed.",
    )
    parser.add_argument("manifest", help="CSV manifest with a 'video' column (or a folder to scan)")
    parser.add_argument(
        "--root",
        default=None,
        help="folder the 'video' paths are relative to (default: the manifest's folder)",
    )
    parser.add_argument(
        "--buckets",
        default=None,
        help="bucket config YAML ('buckets:' list or 'grid:'); shows the histogram and drops",
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=1,
        help="frame stride used to decide whether a video fits a bucket (default 1)",
    )
    parser.add_argument("--fps", type=float, default=None, help="target frame rate instead of --stride")
    parser.add_argument(
        "--short-policy",
        choices=SHORT_POLICIES,
        default="skip",
        help="videos shorter than every bucket: skip (drop), loop or pad (default skip)",
    )
    parser.add_argument(
        "--text-cache", default=None, help="text-embedding cache folder to check for missing entries"
    )
    parser.add_argument(
        "--latent-cache", default=None, help="latent cache folder to check for missing entries"
    )
    parser.add_argument(
        "--deep", action="store_true", help="decode every frame (slow; catches corrupt middles)"
    )
    parser.add_argument("--workers", type=int, default=2, help="files opened in parallel (default 2)")
    parser.add_argument(
        "--write-manifest",
        default=None,
        metavar="OUT",
        help="write readable rows plus num_frames/height/width/fps columns to OUT",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mg-data", description="Datasets for mg: synthetic data and manifest checks."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_synth(subparsers)
    _add_check(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "synth":
        try:
            result = _synth(args)
        except ValueError as exc:
            print(f"mg-data synth: error: {exc}", file=sys.stderr)
            return 2
        print(
            f"train: {result.train_manifest} ({result.num_train} rows)\nval:   {result.val_manifest} ({result.num_val} rows)"
        )
        return 0
    try:
        buckets = BucketConfig.from_yaml(args.buckets) if args.buckets else None
        sampling = FrameSampling(stride=args.stride, fps=args.fps, short_policy=args.short_policy)
        report = check_manifest(
            args.manifest,
            root=args.root,
            buckets=buckets,
            sampling=sampling,
            text_cache=args.text_cache,
            latent_cache=args.latent_cache,
            deep=args.deep,
            num_workers=args.workers,
            write_to=args.write_manifest,
            verbose=not args.quiet and not args.json,
        )
    except (ManifestError, ValueError, RuntimeError) as exc:
        print(f"mg-data check: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
