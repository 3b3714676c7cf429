"""Process groups built from parallel degrees: which ranks share data, sequence, or tensor shards.

Ranks are laid out as a grid with axes (dp, cp, sp, tp), dp outermost and tp innermost, so the ranks of a
tensor-parallel group are consecutive, then those of a sequence-parallel group, and so on (the usual
"fast links for the innermost axis" order). A group along some axes holds the ranks that agree on every
other axis.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

AXES: tuple[str, ...] = ("dp", "cp", "sp", "tp")
"""Parallel axes, outermost first: data, context (K/V gather), Ulysses sequence, tensor."""

SEQUENCE_AXES: tuple[str, ...] = ("cp", "sp")
"""Axes that split the token sequence; the sequence shard index is `cp_rank * sp + sp_rank`."""


def _normalize_axes(axes: str | Iterable[str]) -> tuple[str, ...]:
    if isinstance(axes, str):
        names = AXES if axes == "world" else tuple(a for a in axes.replace("+", ",").split(",") if a)
    else:
        names = tuple(axes)
    unknown = [a for a in names if a not in AXES]
    if unknown:
        raise ValueError(f"unknown parallel axis {unknown}; axes are {list(AXES)} or 'world'")
    return tuple(a for a in AXES if a in names)  # canonical order, duplicates removed


@dataclass(frozen=True)
class ParallelLayout:
    """Degrees of each parallel axis; their product must equal the number of processes."""

    dp: int = 1
    cp: int = 1
    sp: int = 1
    tp: int = 1

    def __post_init__(self) -> None:
        for axis in AXES:
            value = getattr(self, axis)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"parallel degree {axis} must be a positive int, got {value!r}")

    @classmethod
    def for_world(
        cls, world_size: int, *, dp: int | None = None, cp: int = 1, sp: int = 1, tp: int = 1
    ) -> ParallelLayout:
        """Layout for `world_size` processes; `dp=None` takes all ranks the other degrees leave over."""
        model = cp * sp * tp
        if dp is None:
            if world_size % model:
                raise ValueError(
                    f"world size {world_size} is not divisible by cp*sp*tp = {cp}*{sp}*{tp} = {model}, "
                    "so no data-parallel degree fits"
                )
            dp = world_size // model
        layout = cls(dp=dp, cp=cp, sp=sp, tp=tp)
        layout.check(world_size)
        return layout

    @property
    def size(self) -> int:
        return self.dp * self.cp * self.sp * self.tp

    def check(self, world_size: int) -> None:
        """Raise ValueError naming the product that disagrees with the world size."""
        if self.size != world_size:
            raise ValueError(
                f"dp*cp*sp*tp = {self.dp}*{self.cp}*{self.sp}*{self.tp} = {self.size} "
                f"does not equal the world size {world_size}"
            )

    def degree(self, axes: str | Iterable[str]) -> int:
        return math.prod(getattr(self, a) for a in _normalize_axes(axes))

    def coords(self, rank: int) -> dict[str, int]:
        """Position of a global rank on each axis (tp varies fastest)."""
        if not 0 <= rank < self.size:
            raise ValueError(f"rank {rank} is outside a layout of {self.size} ranks")
        out = {}
        for axis in reversed(AXES):
            deg = getattr(self, axis)
            out[axis] = rank % deg
            rank //= deg
        return {a: out[a] for a in AXES}

    def rank_of(self, coords: dict[str, int]) -> int:
        rank = 0
        for axis in AXES:
            rank = rank * getattr(self, axis) + coords[axis]
        return rank

    def group_ranks(self, axes: str | Iterable[str], rank: int) -> tuple[int, ...]:
        """Global ranks that agree with `rank` on every axis not in `axes`, ordered by their index in the group."""
        names = _normalize_axes(axes)
        base = self.coords(rank)
        ranges = [range(getattr(self, a)) for a in names]
        members = []
        for values in itertools.product(*ranges):  # first axis outermost: group index = row-major coords
            c = dict(base)
            c.update(zip(names, values, strict=True))
            members.append(self.rank_of(c))
        return tuple(members)

    def all_groups(self, axes: str | Iterable[str]) -> list[tuple[int, ...]]:
        """Every group along `axes`: a partition of all ranks."""
        seen: dict[tuple[int, ...], None] = {}
        for rank in range(self.size):
            seen.setdefault(self.group_ranks(axes, rank), None)
        return list(seen)


@dataclass(frozen=True)
class Group:
    """A process group as the collectives need it: MindSpore name, member ranks, and this process's index."""

    name: str
    ranks: tuple[int, ...]
    rank: int
    is_world: bool = False

    @property
    def size(self) -> int:
        return len(self.ranks)

    def global_rank(self, index: int) -> int:
        return self.ranks[index]

    @classmethod
    def single(cls, global_rank: int = 0) -> Group:
        """The trivial group of one process (collectives over it are identities)."""
        return cls(name="", ranks=(global_rank,), rank=0, is_world=False)


def _is_launched_distributed() -> bool:
    return any(k in os.environ for k in ("MS_ROLE", "RANK_TABLE_FILE", "MINDSPORE_HCCL_CONFIG_PATH"))


def init_distributed() -> tuple[int, int]:
    """Initialise MindSpore communication if this process was started by msrun (or a rank table).

    Returns (rank, world_size); a plain single process gets (0, 1) without touching the communication stack.
    """
    from mindspore.communication import GlobalComm, get_group_size, get_rank, init

    if not GlobalComm.INITED:
        if not _is_launched_distributed():
            return 0, 1
        init()
    return get_rank(), get_group_size()


@dataclass
class ParallelContext:
    """The groups of one layout for this process: ask `rank("sp")`, `size("dp")`, `group(("cp", "sp"))`.

    Groups are created lazily the first time they are asked for; every rank must ask for the same groups in
    the same order (true when all ranks build the same model with the same plan). Groups of one rank need no
    communication; a group spanning all ranks is the world group.
    """

    layout: ParallelLayout
    rank_id: int = 0
    world_size: int = 1
    _groups: dict[tuple[str, ...], Group] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.layout.check(self.world_size)

    @property
    def coords(self) -> dict[str, int]:
        return self.layout.coords(self.rank_id)

    def size(self, axes: str | Iterable[str]) -> int:
        return self.layout.degree(axes)

    def rank(self, axes: str | Iterable[str]) -> int:
        """This process's index inside its group along `axes`."""
        return self.group(axes).rank

    def group(self, axes: str | Iterable[str]) -> Group:
        names = _normalize_axes(axes)
        if names not in self._groups:
            self._groups[names] = self._make_group(names)
        return self._groups[names]

    def _make_group(self, names: tuple[str, ...]) -> Group:
        ranks = self.layout.group_ranks(names, self.rank_id)
        index = ranks.index(self.rank_id)
        if len(ranks) == 1:
            return Group(name="", ranks=ranks, rank=0)
        from mindspore.communication import GlobalComm, create_group

        if len(ranks) == self.world_size:
            return Group(name=GlobalComm.WORLD_COMM_GROUP, ranks=ranks, rank=index, is_world=True)
        layout_tag = "x".join(f"{a}{getattr(self.layout, a)}" for a in AXES)
        name = f"mgp_{'_'.join(names)}_{layout_tag}_r{'-'.join(map(str, ranks))}"
        if name not in _CREATED_GROUPS:  # a second context with the same layout reuses the group
            create_group(name, list(ranks))
            _CREATED_GROUPS.add(name)
        return Group(name=name, ranks=ranks, rank=index)

    # Shorthands for the groups a training loop uses.
    @property
    def dp_group(self) -> Group:
        return self.group("dp")

    @property
    def sp_group(self) -> Group:
        return self.group("sp")

    @property
    def cp_group(self) -> Group:
        return self.group("cp")

    @property
    def tp_group(self) -> Group:
        return self.group("tp")

    @property
    def seq_group(self) -> Group:
        """Ranks that hold shards of the same sequence (cp and sp together)."""
        return self.group(SEQUENCE_AXES)

    @property
    def model_parallel_group(self) -> Group:
        """Ranks that work on the same samples (cp, sp and tp together): broadcast noise and timesteps here."""
        return self.group(("cp", "sp", "tp"))

    @property
    def world_group(self) -> Group:
        return self.group(AXES)

    @property
    def data_rank(self) -> int:
        """Index of this rank's data shard: ranks of one sp/cp/tp group read the same samples."""
        return self.coords["dp"]

    @property
    def data_world(self) -> int:
        return self.layout.dp


_CURRENT: ParallelContext | None = None
_CREATED_GROUPS: set[str] = set()


def init_parallel(
    *, dp: int | None = None, cp: int = 1, sp: int = 1, tp: int = 1, set_current: bool = True
) -> ParallelContext:
    """Initialise communication (if launched by msrun) and build the context for the given degrees.

    `dp=None` uses every rank the other degrees leave over. A single process without msrun gets a context of
    world size 1 where every group is trivial.
    """
    rank, world = init_distributed()
    layout = ParallelLayout.for_world(world, dp=dp, cp=cp, sp=sp, tp=tp)
    ctx = ParallelContext(layout=layout, rank_id=rank, world_size=world)
    if set_current:
        set_parallel_context(ctx)
    return ctx


def set_parallel_context(ctx: ParallelContext | None) -> None:
    """Make `ctx` the context that styles and helpers use when none is passed."""
    global _CURRENT
    _CURRENT = ctx


def get_parallel_context() -> ParallelContext:
    """The current context; a single-process context of world size 1 if none was set and the process is not
    part of a distributed job (there, call `init_parallel` first)."""
    global _CURRENT
    if _CURRENT is None:
        from mindspore.communication import GlobalComm

        if GlobalComm.INITED:
            raise RuntimeError(
                "no parallel context set in a distributed job: call mg_parallel.init_parallel() first"
            )
        _CURRENT = ParallelContext(layout=ParallelLayout())
    return _CURRENT
