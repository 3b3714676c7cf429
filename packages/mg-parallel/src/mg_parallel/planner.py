"""What a layout costs each rank before running it: model-state bytes, collective traffic, time on the wire.

Model-agnostic: a model is described by its parameters (`ParamSpec`: full shape, the dim tensor parallel cuts)
and by the collectives its parallel plan issues per micro-batch, which the model's own package adds up with the
methods of `StepTraffic` (one per mg-parallel style, with the activation bytes the style sees). This module
knows what mg-parallel does with them, and tests check it against real runs:

- `state_bytes`: parameters, gradients, optimizer state, ZeRO chunk copies (and EMA shadows) of one rank,
  exactly as `ZeroOptimizer.memory_report` counts them;
- `StepTraffic`: bytes and calls per collective of one optimizer step on one rank, counted as
  `mg_parallel.comm.traffic` counts an instrumented run (the input tensor's bytes of every logical collective,
  forward, backward and optimizer), kept per group so that time can be estimated per link;
- `wire_seconds`: ring-algorithm time of that traffic on a cluster (`Cluster`: cards per node, bandwidth inside
  a node and between nodes).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from mg_parallel.grads import _buckets
from mg_parallel.groups import AXES

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast")
DEFAULT_BUCKET_MB = 32.0  # ZeroOptimizer / GradReducer default


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of the plain model: full shape, the dim tensor parallel cuts it along (None: every rank
    holds all of it), whether it trains, and its bytes per element."""

    name: str
    shape: tuple[int, ...]
    tensor_dim: int | None = None
    trainable: bool = True
    itemsize: int = 4

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Layout:
    """Degrees of a layout (ranks ordered dp, cp, sp, tp with tp innermost, as mg-parallel's groups), its ZeRO
    stage and whether blocks recompute their activations in the backward pass."""

    dp: int = 1
    cp: int = 1
    sp: int = 1
    tp: int = 1
    zero_stage: int = 0
    recompute: bool = False

    def __post_init__(self) -> None:
        for axis in AXES:
            if getattr(self, axis) < 1:
                raise ValueError(f"Layout.{axis} must be >= 1, got {getattr(self, axis)}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"Layout.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")

    @property
    def world(self) -> int:
        return self.dp * self.cp * self.sp * self.tp

    def degree(self, axes: Iterable[str]) -> int:
        return _degree(self, frozenset(axes))

    def stride(self, axis: str) -> int:
        """Distance between consecutive ranks along `axis` (tp innermost)."""
        return math.prod(getattr(self, a) for a in AXES[AXES.index(axis) + 1 :])

    def describe(self) -> str:
        parts = [f"{axis}{getattr(self, axis)}" for axis in AXES if getattr(self, axis) > 1] or ["dp1"]
        return " x ".join(parts) + f", ZeRO-{self.zero_stage}" + (", recompute" if self.recompute else "")


@functools.lru_cache(maxsize=4096)
def _degree(layout: Layout, axes: frozenset[str]) -> int:
    return math.prod(getattr(layout, axis) for axis in axes)


def group_key(layout: Layout, axes: Iterable[str]) -> tuple[str, ...] | None:
    """How mg-parallel names the group over `axes`: None for one rank, ("world",) when it spans every rank
    (one group, whatever the axes), else the axes in canonical order."""
    return _group_key(layout, frozenset(axes))


@functools.lru_cache(maxsize=4096)
def _group_key(layout: Layout, axes: frozenset[str]) -> tuple[str, ...] | None:
    names = tuple(a for a in AXES if a in axes)
    size = layout.degree(names)
    if size == 1:
        return None
    if size == layout.world:
        return ("world",)
    return names


def key_size(layout: Layout, key: tuple[str, ...]) -> int:
    return layout.world if key == ("world",) else layout.degree(key)


def crosses_nodes(layout: Layout, key: tuple[str, ...], cards_per_node: int) -> bool:
    """Whether the group holding rank 0 spans more than one node (ranks placed consecutively on nodes)."""
    axes = [a for a in AXES if getattr(layout, a) > 1] if key == ("world",) else list(key)
    highest = sum((getattr(layout, a) - 1) * layout.stride(a) for a in axes)
    return highest >= cards_per_node


# -- model state ------------------------------------------------------------------------------------------------


def _cut(param: ParamSpec, layout: Layout) -> bool:
    return param.tensor_dim is not None and layout.tp > 1


def replica_axes(param: ParamSpec, layout: Layout) -> tuple[str, ...]:
    """Axes along which copies of `param` are identical: all, or all but tp for a tensor-parallel slice."""
    return tuple(a for a in AXES if a != "tp") if _cut(param, layout) else AXES


def local_numel(param: ParamSpec, layout: Layout) -> int:
    """Elements of the slice of `param` a rank holds before ZeRO."""
    return param.numel // layout.tp if _cut(param, layout) else param.numel


def replica_size(param: ParamSpec, layout: Layout) -> int:
    return layout.degree(tuple(a for a in AXES if a != "tp")) if _cut(param, layout) else layout.world


def chunk(numel: int, parts: int) -> int:
    """Elements of one ZeRO chunk: the flat tensor zero-padded to a multiple of `parts`."""
    return -(-numel // parts)


def zero_sharded(param: ParamSpec, layout: Layout) -> bool:
    return layout.zero_stage >= 1 and param.trainable and replica_size(param, layout) > 1


@dataclass
class StateBytes:
    """Bytes of model state on one rank, in `ZeroOptimizer.memory_report`'s terms (plus EMA shadows)."""

    params: int = 0
    grads: int = 0
    optimizer_state: int = 0
    shard_copies: int = 0
    ema: int = 0

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer_state + self.shard_copies + self.ema

    def as_dict(self) -> dict[str, int]:
        return {
            "params": self.params,
            "grads": self.grads,
            "optimizer_state": self.optimizer_state,
            "shard_copies": self.shard_copies,
            "ema": self.ema,
        }


def state_bytes(
    params: Sequence[ParamSpec],
    layout: Layout,
    optimizer_states: int = 2,
    optimizer_scalar_bytes: int = 4,
    ema: bool = False,
) -> StateBytes:
    """Bytes one rank holds for `params` under `layout`: its slices (chunks under ZeRO-3), gradients after
    reduction (chunks from stage 2), `optimizer_states` tensors per optimized piece (AdamW: 2 moments) plus
    `optimizer_scalar_bytes` (a step counter), the stage 1-2 chunk copies the optimizer updates, and one EMA
    shadow per trainable piece (chunks under ZeRO-3). Padding of the last chunk is counted, as allocated."""
    out = StateBytes(optimizer_state=optimizer_scalar_bytes)
    stage = layout.zero_stage
    for p in params:
        local, size = local_numel(p, layout), replica_size(p, layout)
        sharded = zero_sharded(p, layout)
        piece = chunk(local, size) if sharded else local
        held = piece if stage == 3 else local
        out.params += held * p.itemsize
        if not p.trainable:
            continue
        optimized = piece if sharded else local
        out.grads += (piece if stage >= 2 else local) * p.itemsize
        out.optimizer_state += optimizer_states * optimized * p.itemsize
        if sharded and stage in (1, 2):
            out.shard_copies += piece * p.itemsize
        if ema:
            out.ema += held * p.itemsize
    return out


# -- traffic ----------------------------------------------------------------------------------------------------


@dataclass
class Traffic:
    """Bytes (input tensor bytes per call) and calls per (collective, group) on one rank."""

    entries: dict[tuple[str, tuple[str, ...]], list[int]] = field(default_factory=dict)

    def add(self, op: str, group: tuple[str, ...] | None, nbytes: int, count: int = 1) -> None:
        if op not in OPS:
            raise ValueError(f"unknown collective {op!r}; expected one of {OPS}")
        if group is None or count <= 0:
            return
        entry = self.entries.setdefault((op, group), [0, 0])
        entry[0] += int(nbytes) * count
        entry[1] += count

    def merge(self, other: Traffic, times: int = 1) -> None:
        for (op, group), (nbytes, calls) in other.entries.items():
            entry = self.entries.setdefault((op, group), [0, 0])
            entry[0] += nbytes * times
            entry[1] += calls * times

    @property
    def bytes(self) -> dict[str, int]:
        """Bytes per collective, as `mg_parallel.comm.traffic.bytes` reports them."""
        out = dict.fromkeys(OPS, 0)
        for (op, _), (nbytes, _) in self.entries.items():
            out[op] += nbytes
        return out

    @property
    def calls(self) -> dict[str, int]:
        out = dict.fromkeys(OPS, 0)
        for (op, _), (_, calls) in self.entries.items():
            out[op] += calls
        return out

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


class StepTraffic:
    """The collectives of one micro-batch, added style by style with the bytes each style's input has on this
    rank (float32: 4 bytes an element). Forward collectives inside recomputed regions run again in the
    backward pass: add them with `recomputed=True` and `micro_batch()` counts them twice under recompute."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.forward = Traffic()
        self.backward = Traffic()
        self.recomputed = Traffic()

    def _group(self, axes: Iterable[str]) -> tuple[str, ...] | None:
        return group_key(self.layout, axes)

    def _fwd(self, op: str, axes, nbytes: int, recomputed: bool, count: int = 1) -> None:
        (self.recomputed if recomputed else self.forward).add(op, self._group(axes), nbytes, count)

    def _bwd(self, op: str, axes, nbytes: int, count: int = 1) -> None:
        self.backward.add(op, self._group(axes), nbytes, count)

    # One method per mg-parallel style; `nbytes` is what this rank holds of the tensor the style sees.
    def split_sequence(self, axes: Iterable[str], local_bytes: int, count: int = 1) -> None:
        """`SequenceShardInput` / `SplitToGroup`: backward all-gathers the local gradient."""
        self._bwd("all_gather", axes, local_bytes, count)

    def gather_sequence(self, axes: Iterable[str], local_bytes: int, recomputed: bool = False) -> None:
        """`SequenceGatherOutput` / `GatherFromGroup`: forward all-gathers the local piece."""
        self._fwd("all_gather", axes, local_bytes, recomputed)

    def column_parallel(
        self, input_bytes: int, sequence_parallel: bool, recomputed: bool = False, axes=("tp",)
    ) -> None:
        """`ColwiseParallel`: with sequence parallel the input (a sequence shard) is all-gathered and its
        gradient reduce-scattered; without, the input gradient is all-reduced (`CopyToGroup`)."""
        if sequence_parallel:
            self._fwd("all_gather", axes, input_bytes, recomputed)
            self._bwd("reduce_scatter", axes, input_bytes * self.layout.degree(axes))
        else:
            self._bwd("all_reduce", axes, input_bytes)

    def row_parallel(
        self, output_bytes: int, sequence_parallel: bool, recomputed: bool = False, axes=("tp",)
    ) -> None:
        """`RowwiseParallel` on partial outputs of `output_bytes`: reduce-scatter forward and all-gather of the
        shard's gradient backward (sequence parallel), or all-reduce forward (`ReduceFromGroup`)."""
        if sequence_parallel:
            self._fwd("reduce_scatter", axes, output_bytes, recomputed)
            self._bwd("all_gather", axes, output_bytes // self.layout.degree(axes))
        else:
            self._fwd("all_reduce", axes, output_bytes, recomputed)

    def ulysses(
        self, q_bytes: int, k_bytes: int, v_bytes: int, recomputed: bool = False, axes=("sp",)
    ) -> None:
        """`UlyssesAttention`: all-to-all of q, k, v to head shards and of the output back, forward; the four
        adjoint all-to-alls backward (the output has q's bytes)."""
        for nbytes in (q_bytes, k_bytes, v_bytes, q_bytes):
            self._fwd("all_to_all", axes, nbytes, recomputed)
            self._bwd("all_to_all", axes, nbytes)

    def context_parallel(self, k_bytes: int, v_bytes: int, recomputed: bool = False, axes=("cp",)) -> None:
        """`ContextParallelAttention`: K and V all-gathered forward, their gradients reduce-scattered."""
        n = self.layout.degree(axes)
        for nbytes in (k_bytes, v_bytes):
            self._fwd("all_gather", axes, nbytes, recomputed)
            self._bwd("reduce_scatter", axes, nbytes * n)

    def zero_read(self, param: ParamSpec, recomputed: bool = False, reads: int = 1) -> None:
        """A read of a ZeRO-sharded parameter by its cell. Stage 3: the read all-gathers the parameter's chunk;
        stages 2 and 3: the backward pass reduce-scatters its gradient (zero-padded to the replica group) into
        this rank's chunk, once per read."""
        if self.layout.zero_stage < 2 or not zero_sharded(param, self.layout):
            return
        axes = replica_axes(param, self.layout)
        n = replica_size(param, self.layout)
        piece = chunk(local_numel(param, self.layout), n) * param.itemsize
        if self.layout.zero_stage == 3:
            self._fwd("all_gather", axes, piece, recomputed, reads)
        self._bwd("reduce_scatter", axes, piece * n, reads)

    def micro_batch(self) -> Traffic:
        """Everything one micro-batch sends."""
        total = Traffic()
        total.merge(self.forward)
        total.merge(self.recomputed, 2 if self.layout.recompute else 1)
        total.merge(self.backward)
        return total


def optimizer_traffic(
    params: Sequence[ParamSpec], layout: Layout, bucket_mb: float = DEFAULT_BUCKET_MB
) -> Traffic:
    """Collectives of `ZeroOptimizer`'s step: the gradient mean of stages 0-1 (an all-reduce per bucket; stages
    2-3 reduce-scatter in the backward pass, see `StepTraffic.zero_read`), one 4-byte all-reduce per group the
    global norm sums over, and the all-gather of the updated chunks per bucket (stages 1-2). Buckets hold the
    parameters of one replica group and dtype, up to `bucket_mb` each, in parameter order."""
    traffic = Traffic()
    stage = layout.zero_stage
    limit = int(bucket_mb * 2**20)
    trainable = [p for p in params if p.trainable]
    keyed = [(i, p, group_key(layout, replica_axes(p, layout))) for i, p in enumerate(trainable)]

    def nbytes(i: int, parts: int = 1) -> int:
        return chunk(local_numel(trainable[i], layout), parts) * trainable[i].itemsize

    if stage <= 1:
        items = [(i, nbytes(i), (g, p.itemsize)) for i, p, g in keyed if g]
        for bucket in _buckets(items, limit):
            traffic.add("all_reduce", keyed[bucket[0]][2], sum(nbytes(i) for i in bucket))
    if stage in (1, 2):
        items = [(i, local_numel(p, layout) * 4, (g, p.itemsize)) for i, p, g in keyed if g]
        for bucket in _buckets(items, limit):
            group = keyed[bucket[0]][2]
            traffic.add("all_gather", group, sum(nbytes(i, key_size(layout, group)) for i in bucket))
    norm_groups: dict[tuple[str, ...], None] = {}
    for _, p, _ in keyed:
        replicas = set(replica_axes(p, layout))
        axes = set(AXES) - replicas
        if zero_sharded(p, layout) and stage >= 2:
            axes |= replicas
        key = group_key(layout, axes)
        if key is not None:
            norm_groups.setdefault(key)
    for key in norm_groups:
        traffic.add("all_reduce", key, 4)
    return traffic


# -- time -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """Cards and links: memory per card, peak dense FLOP/s at the training precision, cards per node, and the
    bandwidth (bytes/s) one card reaches in a collective inside a node and across nodes."""

    cards: int
    card_memory: float
    card_flops: float
    cards_per_node: int = 8
    link_bandwidth: float = 56e9
    node_bandwidth: float = 25e9
    reserve: float = 0.1

    @property
    def usable_memory(self) -> float:
        """Bytes a card offers the model: `reserve` is kept for the framework, kernels' workspace, fragments."""
        return self.card_memory * (1.0 - self.reserve)


# Bytes a rank sends over the wire per input byte with ring algorithms, for a group of n ranks.
def _wire_factor(op: str, n: int) -> float:
    if op == "all_reduce":
        return 2.0 * (n - 1) / n
    if op == "all_gather":
        return float(n - 1)  # the input is one rank's piece; n - 1 pieces arrive
    if op in ("reduce_scatter", "all_to_all"):
        return (n - 1) / n
    return 1.0  # broadcast


def wire_seconds(traffic: Traffic, layout: Layout, cluster: Cluster) -> float:
    """Time on the wire of `traffic` with ring algorithms, no overlap with compute: each group's collectives at
    the bandwidth inside a node, or between nodes when its ranks span nodes."""
    seconds = 0.0
    for (op, group), (nbytes, _) in traffic.entries.items():
        n = key_size(layout, group)
        across = crosses_nodes(layout, group, cluster.cards_per_node)
        bandwidth = cluster.node_bandwidth if across else cluster.link_bandwidth
        seconds += _wire_factor(op, n) * nbytes / bandwidth
    return seconds


def layouts(
    world: int, stages: Sequence[int] = (0, 1, 2, 3), recompute: Sequence[bool] = (False, True)
) -> Iterator[Layout]:
    """Every (dp, cp, sp, tp) whose product is `world`, for each ZeRO stage and recompute setting."""
    divisors = [d for d in range(1, world + 1) if world % d == 0]
    for tp, sp, cp in itertools.product(divisors, repeat=3):
        if world % (tp * sp * cp):
            continue
        dp = world // (tp * sp * cp)
        for stage, again in itertools.product(stages, recompute):
            yield Layout(dp=dp, cp=cp, sp=sp, tp=tp, zero_stage=stage, recompute=again)
