"""The `mg-train` command: one subcommand per job, each configured by a YAML file plus overrides.

Every config field is also a flag (`--optim.lr 3e-4`, `--prompts "a red circle" "a blue square"`), and
`key.sub=value` arguments override too; `mg-train <command> --help` lists every field with its default.
The whole config is validated before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import typing
from collections.abc import Sequence
from typing import Any

from mg_train.config import schema
from mg_train.config.loader import (
    ConfigError,
    bundled_configs,
    deep_merge,
    from_dict,
    read_yaml_tree,
    resolve_config_path,
)

# Exit code of a run stopped by SIGTERM or Ctrl-C (after saving a checkpoint when it trains): 128 + SIGINT, the
# shell's code for an interrupted command, for every command, model and rank.
EXIT_STOPPED = 130

# name -> (config class, "module:function", one-line description)
COMMANDS: dict[str, tuple[type, str, str]] = {
    "quickstart": (
        schema.QuickstartConfig,
        "mg_train.quickstart:run",
        "end to end on CPU: synthetic data, TAE, caches, transformer, samples, report",
    ),
    "tae-train": (
        schema.TAETrainConfig,
        "mg_train.tae_train:run",
        "train (or fine-tune) the temporal autoencoder",
    ),
    "tae-eval": (
        schema.TAEEvalConfig,
        "mg_train.tae_eval:run",
        "PSNR / SSIM / LPIPS of a TAE over a manifest",
    ),
    "cache-latents": (
        schema.CacheLatentsConfig,
        "mg_train.caching:cache_latents",
        "encode a manifest's clips to a latent cache",
    ),
    "cache-text": (
        schema.CacheTextConfig,
        "mg_train.caching:cache_text",
        "embed a manifest's captions to a text cache",
    ),
    "train": (
        schema.TransformerTrainConfig,
        "mg_train.transformer_train:run",
        "train the transformer (any stage)",
    ),
    "export": (
        schema.ExportConfig,
        "mg_train.export:run",
        "write a checkpoint's model (any parallel layout) as a model folder, one tensor at a time",
    ),
    "sample": (schema.SampleConfig, "mg_train.sampling:run", "generate videos or images from prompts"),
    "backtranslate": (
        schema.BacktranslateConfig,
        "mg_train.backtranslate:run",
        "Movie Gen Edit stage III data: edit clips with the stage-II model, write the reversed pairs",
    ),
    "edit": (
        schema.EditCommandConfig,
        "mg_train.sampling:edit",
        "change a video as an instruction says, with a Movie Gen Edit pipeline",
    ),
    "plan": (
        schema.PlanConfig,
        "mg_train.plan:run",
        "which parallel layouts of a training config fit a cluster: memory, FLOPs, traffic, step time",
    ),
}

# Short flags of `mg-train plan` for the cluster (`--cards 8` is `--cluster.cards 8`).
PLAN_FLAGS = {
    "--cards": "cluster.cards",
    "--card-memory": "cluster.card_memory",
    "--card-tflops": "cluster.card_tflops",
    "--cards-per-node": "cluster.cards_per_node",
    "--link-bandwidth": "cluster.link_bandwidth",
    "--node-bandwidth": "cluster.node_bandwidth",
}


def leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    """(dotted key, type, default, help) of every non-dataclass field of a config class, depth first."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += leaf_fields(tp, key + ".")
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rows.append((key, tp, default, f.metadata.get("help", "")))
    return rows


def _is_sequence(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_is_sequence(a) for a in typing.get_args(tp) if a is not type(None))
    return origin in (list, tuple)


def _is_text(tp: Any) -> bool:
    """Fields whose values stay raw strings (not parsed as YAML): str, and lists of str."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    for arg in args:
        if arg is str:
            return True
        if typing.get_origin(arg) in (list, tuple) and typing.get_args(arg)[:1] == (str,):
            return True
    return False


def _parse_value(raw: str, text: bool, in_list: bool = False) -> Any:
    """A flag value: raw for text fields (`null` means None only for a whole optional field), else YAML."""
    import yaml

    if text and (in_list or raw not in ("null", "~")):
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"value {raw!r} is not valid YAML: {exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mg-train",
        description="Movie Gen Video training and sampling on MindSpore. `mg-train <command> --help` lists every option.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.add_parser("configs", help="list the bundled configs (usable as --config NAME)")
    for name, (cls, _, description) in COMMANDS.items():
        sub = subparsers.add_parser(
            name,
            help=description,
            description=f"{description}. Options come from --config, then KEY=VALUE overrides, then flags.",
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        sub.add_argument(
            "--config", "-c", default=None, help="YAML file or bundled config name (`mg-train configs`)"
        )
        sub.add_argument(
            "overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optim.lr=3e-4"
        )
        if name == "plan":
            sub.add_argument(
                "--cluster", dest="cluster_file", default=None, help="YAML file of cluster.* fields"
            )
            for flag, key in PLAN_FLAGS.items():
                sub.add_argument(
                    flag, dest=f"field:{key}", default=argparse.SUPPRESS, metavar="VALUE", help=key
                )
        for key, tp, default, help_text in leaf_fields(cls):
            sub.add_argument(
                f"--{key}",
                dest=f"field:{key}",
                nargs="+" if _is_sequence(tp) else None,
                default=argparse.SUPPRESS,
                metavar="VALUE",
                help=f"{help_text} (default: {default!r})",
            )
    return parser


def parse_config(command: str, args: argparse.Namespace) -> Any:
    """The validated config of `command`: file, then KEY=VALUE overrides, then flags."""
    from mg_train.config.loader import apply_overrides

    cls = COMMANDS[command][0]
    data: dict[str, Any] = {}
    origin = "<defaults>"
    if args.config:
        path = resolve_config_path(args.config)
        data, origin = read_yaml_tree(path), str(path)
    if getattr(args, "cluster_file", None):  # mg-train plan --cluster FILE: its fields, under the overrides
        cluster = read_yaml_tree(resolve_config_path(args.cluster_file))
        data = deep_merge(data, {"cluster": cluster.get("cluster", cluster)})
    data = apply_overrides(data, args.overrides)
    types = {key: tp for key, tp, _, _ in leaf_fields(cls)}
    for dest, raw in vars(args).items():
        if not dest.startswith("field:"):
            continue
        key = dest[len("field:") :]
        text = _is_text(types[key])
        if isinstance(raw, list):
            value = [_parse_value(r, text, in_list=True) for r in raw]
        else:
            value = _parse_value(raw, text)
        node: Any = value
        for part in reversed(key.split(".")):
            node = {part: node}
        data = deep_merge(data, node)
    if args.overrides or any(d.startswith("field:") for d in vars(args)):
        origin += " + command line"
    return from_dict(cls, data, origin)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "configs":
        print("\n".join(bundled_configs()))
        return 0
    try:
        config = parse_config(args.command, args)
        if hasattr(config, "check"):  # value ranges and contradictions, before MindSpore is even imported
            config.check()
    except ConfigError as exc:
        print(f"mg-train {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    # MindSpore's own warnings (graph-compiler notes, whole tensors printed) would drown the progress output:
    # GLOG_v=3 keeps its errors only. Set GLOG_v (0-3) in the environment to see more.
    os.environ.setdefault("GLOG_v", "3")
    from mg_train.runtime import setup_mindspore

    setup_mindspore()
    from mg_train.pipeline import RequestError  # imports MindSpore: only once the config is known good

    module_name, function_name = COMMANDS[args.command][1].split(":")
    run = getattr(importlib.import_module(module_name), function_name)
    try:
        run(config)
    except ConfigError as exc:  # inputs checked when the run starts (files, sizes), before any work
        print(f"mg-train {args.command}: config error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, RequestError) as exc:  # a named input file is missing, a request is impossible
        print(f"mg-train {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # includes TrainingStopped: a checkpoint was saved, rerun to resume
        print(f"mg-train {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return EXIT_STOPPED
    return 0


if __name__ == "__main__":
    sys.exit(main())
