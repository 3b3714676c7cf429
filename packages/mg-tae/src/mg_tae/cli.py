"""The `mg-tae` command line: `mg-tae inflate` converts a diffusers 2D VAE into a TAE checkpoint."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mg-tae", description="Movie Gen Temporal Autoencoder tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    inflate = commands.add_parser(
        "inflate",
        help="convert a diffusers AutoencoderKL (e.g. the SD3.5 VAE) into a TAE checkpoint",
        description=(
            "Inflate a diffusers-format 2D VAE into a Temporal Autoencoder checkpoint (config.json + "
            "model.safetensors). Keys are mapped by name and every shape is checked; temporal layers start as "
            "identities, so the TAE reproduces the VAE on single frames."
        ),
    )
    inflate.add_argument(
        "--src", required=True, type=Path, help="diffusers VAE weights (diffusion_pytorch_model.safetensors)"
    )
    inflate.add_argument("--out", required=True, type=Path, help="output directory for the TAE checkpoint")
    inflate.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TAEConfig JSON for the target (default: the SD3.5-sized TAEConfig defaults)",
    )
    inflate.add_argument(
        "--non-strict",
        action="store_true",
        help="write the checkpoint even if source keys are unused or non-temporal model keys are missing",
    )
    return parser


def _inflate(args: argparse.Namespace) -> int:
    from mg_tae.config import TAEConfig
    from mg_tae.inflate import inflate_from_diffusers

    config = TAEConfig.load(args.config) if args.config else TAEConfig()
    start = time.time()
    print(f"[mg-tae] reading {args.src} and building the TAE ({config.block_out_channels})", flush=True)
    try:
        model, report = inflate_from_diffusers(args.src, config, strict=not args.non_strict)
    except (ValueError, FileNotFoundError) as err:
        print(f"[mg-tae] error: {err}", file=sys.stderr)
        return 2
    print(f"[mg-tae] {report.summary()}", flush=True)
    print(f"[mg-tae] writing {args.out}", flush=True)
    model.save_pretrained(args.out)
    summary = {
        "mapped": len(report.mapped),
        "unused_source": report.unused_source,
        "missing": report.missing,
        "temporal_initialised": len(report.temporal_initialised),
    }
    print(json.dumps(summary))
    print(f"[mg-tae] done in {time.time() - start:.1f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "inflate":
        return _inflate(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
