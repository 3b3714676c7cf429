"""`parallelize(cell, plan)`: apply parallel styles to sub-cells chosen by path pattern.

A plan maps path patterns to a style (or a list of styles applied in order):

    parallelize(model, {
        "blocks.0": SequenceShardInput(),           # split x along the sequence before the first block
        "blocks.-1": SequenceGatherOutput(),        # gather it after the last one
        "blocks.*.attn.core": UlyssesAttention(),   # heads <-> sequence all-to-all around attention
        "blocks.*.mlp.w1": ColwiseParallel(),
        "blocks.*.mlp.w2": RowwiseParallel(),
    }, ctx)

Patterns are dotted paths as in `cell.cells_and_names()`; `*` matches one path segment and a negative
integer counts from the end of a CellList / SequentialCell. A pattern that matches nothing is an error.
Styles either replace the sub-cell (tensor-parallel linears) or wrap its forward in place, so parameter names
and checkpoint keys stay those of the plain model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mindspore import nn

from mg_parallel.groups import ParallelContext, get_parallel_context


class ParallelStyle:
    """Base class: `apply` returns the cell to put at the matched path (the same cell when changed in place)."""

    def apply(self, cell: nn.Cell, path: str, ctx: ParallelContext) -> nn.Cell:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def wrap_forward(cell: nn.Cell, pre: nn.Cell | None = None, post: nn.Cell | None = None) -> nn.Cell:
    """Change `cell` in place so that it runs `pre(*args)` -> its own construct -> `post(out)`.

    The cell's class becomes a subclass with the wrapped construct (works in PyNative, graph mode and
    `ms.jit`); `pre` returns the tuple of new positional arguments, keyword arguments pass through. Wrapping
    twice nests: the later wrap runs outermost. The cell's parameters and their names do not change.
    """
    base = type(cell)
    level = getattr(cell, "_mg_wrap_level", 0) + 1
    pre_name, post_name = f"mg_pre_{level}", f"mg_post_{level}"
    has_pre, has_post = pre is not None, post is not None

    def construct(self, *args, **kwargs):
        if has_pre:
            args = getattr(self, pre_name)(*args)
        out = base.construct(self, *args, **kwargs)
        if has_post:
            out = getattr(self, post_name)(out)
        return out

    cell.__class__ = type(base.__name__, (base,), {"construct": construct, "__module__": base.__module__})
    if has_pre:
        setattr(cell, pre_name, pre)
    if has_post:
        setattr(cell, post_name, post)
    object.__setattr__(cell, "_mg_wrap_level", level)
    return cell


def _children(cell: nn.Cell) -> dict[str, nn.Cell]:
    return dict(cell.name_cells())


def _match(cell: nn.Cell, segments: list[str], prefix: str) -> list[str]:
    if not segments:
        return [prefix]
    head, rest = segments[0], segments[1:]
    children = _children(cell)
    if head == "*":
        names = list(children)
    elif head.lstrip("-").isdigit() and head.startswith("-"):
        numeric = sorted((n for n in children if n.isdigit()), key=int)
        index = int(head)
        names = [numeric[index]] if -len(numeric) <= index < 0 else []
    else:
        names = [head] if head in children else []
    found = []
    for name in names:
        path = f"{prefix}.{name}" if prefix else name
        found.extend(_match(children[name], rest, path))
    return found


def match_paths(model: nn.Cell, pattern: str) -> list[str]:
    """Paths of the sub-cells of `model` that `pattern` selects (see module docstring)."""
    if not pattern:
        raise ValueError("empty plan pattern: a plan addresses sub-cells, not the root")
    return _match(model, pattern.split("."), "")


def get_submodule(model: nn.Cell, path: str) -> nn.Cell:
    cell = model
    for name in path.split("."):
        children = _children(cell)
        if name not in children:
            raise KeyError(f"{type(cell).__name__} has no sub-cell {name!r} (path {path!r})")
        cell = children[name]
    return cell


def set_submodule(model: nn.Cell, path: str, new: nn.Cell) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = get_submodule(model, parent_path) if parent_path else model
    if isinstance(parent, (nn.CellList, nn.SequentialCell)) and name.isdigit():
        parent[int(name)] = new
    else:
        setattr(parent, name, new)


def parallelize(
    model: nn.Cell,
    plan: Mapping[str, ParallelStyle | Sequence[ParallelStyle]],
    ctx: ParallelContext | None = None,
) -> nn.Cell:
    """Apply `plan` to `model` in place (entries in order) and return it."""
    ctx = ctx or get_parallel_context()
    for pattern, styles in plan.items():
        styles = [styles] if isinstance(styles, ParallelStyle) else list(styles)
        for style in styles:
            if not isinstance(style, ParallelStyle):
                raise TypeError(f"plan entry {pattern!r}: {style!r} is not a ParallelStyle")
        paths = match_paths(model, pattern)
        if not paths:
            sample = [name for name, _ in model.cells_and_names() if name][:12]
            raise ValueError(
                f"plan pattern {pattern!r} matches no sub-cell of {type(model).__name__}; "
                f"sub-cell paths look like {sample}"
            )
        for path in paths:
            for style in styles:
                cell = get_submodule(model, path)
                new = style.apply(cell, path, ctx)
                if new is not cell:
                    set_submodule(model, path, new)
                    new.update_parameters_name(path + ".")  # full names, as the plain model had
    return model
