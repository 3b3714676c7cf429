"""Load YAML files into typed config dataclasses, with `extends:` inheritance and `key.sub=value` overrides.

Every key is checked against the dataclass before any work starts: an unknown or mistyped key, or a value of the
wrong type, raises `ConfigError` naming the file and the dotted key (with a suggestion for near-misses).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "configs"
EXTENDS_KEY = "extends"
# A YAML 1.2 float such as 1e-4 or 3E+2 (YAML 1.1, which PyYAML implements, needs a dot for exponents).
_FLOAT_LITERAL = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(ValueError):
    """A config file or override does not match the schema; the message names the file and the key."""


def bundled_configs() -> list[str]:
    """Names of the configs shipped with mg-train (usable wherever a config path is expected)."""
    return sorted(str(p.relative_to(BUNDLED_DIR).with_suffix("")) for p in BUNDLED_DIR.rglob("*.yaml"))


def resolve_config_path(name: str | Path) -> Path:
    """A file path as given, or a bundled config name such as `transformer/stage1_t2i_256px_1B`."""
    path = Path(name)
    if path.is_file():
        return path
    bundled = BUNDLED_DIR / (str(name) if str(name).endswith(".yaml") else f"{name}.yaml")
    if bundled.is_file():
        return bundled
    hint = difflib.get_close_matches(str(name), bundled_configs(), n=3)
    more = f"; did you mean {', '.join(hint)}?" if hint else "; `mg-train configs` lists the bundled ones"
    raise ConfigError(f"config '{name}' is neither a file nor a bundled config{more}")


def read_yaml_tree(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, merging it over the file named by its `extends:` key (relative to it)."""
    path = path.resolve()
    if path in _chain:
        raise ConfigError(f"{path}: `extends` forms a cycle through {' -> '.join(str(p) for p in _chain)}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    parent = data.pop(EXTENDS_KEY, None)
    if parent is None:
        return data
    parent_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    if not parent_path.is_file():
        raise ConfigError(f"{path}: extends '{parent}', which does not exist at {parent_path}")
    return deep_merge(read_yaml_tree(parent_path, (*_chain, path)), data)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` over `base`; nested mappings merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` strings (value parsed as YAML: `lr=1e-4`, `size=[64,64]`, `resume=null`)."""
    data = dict(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override '{item}': expected KEY=VALUE, e.g. optim.lr=1e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': value is not valid YAML: {exc}") from exc
        node = {}
        for part in reversed(key.strip().split(".")):
            node = {part: value}
            value = node
        data = deep_merge(data, node)
    return data


def load_config(cls: type[T], source: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """Build `cls` from a YAML file (or bundled config name) plus overrides; defaults fill missing keys."""
    origin = "<defaults>"
    data: dict[str, Any] = {}
    if source is not None:
        path = resolve_config_path(source)
        origin = str(path)
        data = read_yaml_tree(path)
    data = apply_overrides(data, overrides)
    if overrides:
        origin += " + overrides"
    return from_dict(cls, data, origin)


def from_dict(cls: type[T], data: Mapping[str, Any], origin: str = "<dict>", prefix: str = "") -> T:
    """Recursively convert a mapping into dataclass `cls`, rejecting unknown keys and wrong types."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: '{prefix or '<root>'}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        near = difflib.get_close_matches(str(key), fields, n=1)
        hint = f"; did you mean '{_join(prefix, near[0])}'?" if near else f"; valid keys: {', '.join(fields)}"
        raise ConfigError(f"{origin}: unknown key '{_join(prefix, key)}'{hint}")
    kwargs = {name: _convert(hints[name], value, origin, _join(prefix, name)) for name, value in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{origin}: {prefix or '<root>'}: {exc}") from exc
    return obj


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-ready data from a config dataclass (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _convert(tp: Any, value: Any, origin: str, key: str) -> Any:
    """Check `value` against type hint `tp`, converting YAML's lists/ints where the type asks for it."""
    origin_tp = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin_tp in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, origin, key)
            except ConfigError:
                continue
        raise ConfigError(f"{origin}: '{key}' = {value!r} matches none of {_type_name(tp)}")
    if origin_tp is typing.Literal:
        if value not in args:
            raise ConfigError(f"{origin}: '{key}' must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value or {}, origin, key)
    if origin_tp in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{origin}: '{key}' must be a list ({_type_name(tp)}), got {value!r}")
        if origin_tp is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"{origin}: '{key}' must have {len(args)} items, got {len(value)}: {value!r}"
                )
            return tuple(
                _convert(a, v, origin, f"{key}[{i}]")
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, origin, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin_tp is tuple or tp is tuple else items
    if origin_tp in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{origin}: '{key}' must be a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {
            _convert(kt, k, origin, f"{key}.{k}"): _convert(vt, v, origin, f"{key}.{k}")
            for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, str) and _FLOAT_LITERAL.match(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads 1e-4 without a dot as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{origin}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{origin}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{origin}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: '{key}' must be a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{origin}: '{key}' must be a path string, got {value!r}")
        return Path(value)
    raise ConfigError(f"{origin}: '{key}': unsupported field type {_type_name(tp)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
