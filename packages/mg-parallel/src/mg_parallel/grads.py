"""Data-parallel gradient reduction, global gradient norms and parameter broadcast.

Every parameter has a replica group: the ranks that hold the same values of it. By default that is every
rank; a tensor-parallel shard is held only by the ranks with the same tp index (`("dp", "cp", "sp")`).
`GradReducer` averages each gradient over its replica group; with the gradient convention of
`mg_parallel.mappings` this gives every rank the single-process gradient of the global-mean loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import mindspore as ms
from mindspore import Parameter, mint, nn, ops

from mg_parallel.comm import _AllReduceSum, _BroadcastImpl, native_supported
from mg_parallel.groups import AXES, Group, ParallelContext, get_parallel_context

REPLICA_AXES_ATTR = "mg_replica_axes"


def replica_axes(param: Parameter) -> tuple[str, ...]:
    """Axes along which copies of `param` are identical (all axes unless a style sharded it)."""
    return tuple(getattr(param, REPLICA_AXES_ATTR, AXES))


def set_replica_axes(param: Parameter, axes: Sequence[str]) -> None:
    setattr(param, REPLICA_AXES_ATTR, tuple(axes))


def replica_group(param: Parameter, ctx: ParallelContext) -> Group:
    return ctx.group(replica_axes(param))


def _buckets(items: list[tuple[int, int, object]], limit_bytes: int) -> list[list[int]]:
    """Split (index, nbytes, key) items into runs of one key, each at most `limit_bytes` (one item may exceed)."""
    by_key: dict[object, list[tuple[int, int]]] = {}
    for index, nbytes, key in items:
        by_key.setdefault(key, []).append((index, nbytes))
    out = []
    for entries in by_key.values():
        current, size = [], 0
        for index, nbytes in entries:
            if current and size + nbytes > limit_bytes:
                out.append(current)
                current, size = [], 0
            current.append(index)
            size += nbytes
        if current:
            out.append(current)
    return out


class GradReducer(nn.Cell):
    """Average gradients over each parameter's replica group, in flat buckets (few, large all-reduces).

    `reducer(grads)` takes and returns a tuple aligned with `params`. Works in PyNative and graph mode.
    """

    def __init__(
        self, params: Sequence[Parameter], ctx: ParallelContext | None = None, bucket_mb: float = 32.0
    ):
        super().__init__(auto_prefix=False)
        ctx = ctx or get_parallel_context()
        params = list(params)
        self.count = len(params)
        self.shapes = tuple(tuple(p.shape) for p in params)
        self.numels = tuple(int(math.prod(p.shape)) for p in params)
        items, groups = [], {}
        for i, p in enumerate(params):
            group = replica_group(p, ctx)
            if group.size > 1:
                groups[i] = group
                items.append((i, self.numels[i] * p.itemsize, (group, p.dtype)))
        buckets = _buckets(items, int(bucket_mb * 2**20))
        self.bucket_members = tuple(tuple(b) for b in buckets)
        self.bucket_scales = tuple(1.0 / groups[b[0]].size for b in buckets)
        self.reducers = nn.CellList([_AllReduceSum(groups[b[0]]) for b in buckets])
        # where each gradient lands: (bucket, offset) or (-1, 0) for untouched ones
        place = [(-1, 0)] * self.count
        for k, members in enumerate(buckets):
            offset = 0
            for i in members:
                place[i] = (k, offset)
                offset += self.numels[i]
        self.place = tuple(place)

    def construct(self, grads):
        reduced = []
        for k in range(len(self.bucket_members)):
            members = self.bucket_members[k]
            flat = ops.cat([ops.reshape(grads[i], (-1,)) for i in members])
            reduced.append(self.reducers[k](flat) * self.bucket_scales[k])
        out = []
        for i in range(self.count):
            k, offset = self.place[i]
            if k < 0:
                out.append(grads[i])
            else:
                out.append(ops.reshape(mint.narrow(reduced[k], 0, offset, self.numels[i]), self.shapes[i]))
        return tuple(out)


class GlobalNorm(nn.Cell):
    """L2 norm of a gradient tuple whose pieces are spread over groups (tensor / ZeRO shards).

    `sum_groups[i]` is the group over which gradient i holds distinct pieces of one tensor (summed), or None
    when it is complete on every rank.
    """

    def __init__(self, sum_groups: Sequence[Group | None]):
        super().__init__(auto_prefix=False)
        keys: dict[Group, list[int]] = {}
        local = []
        for i, group in enumerate(sum_groups):
            if group is None or group.size == 1:
                local.append(i)
            else:
                keys.setdefault(group, []).append(i)
        self.local = tuple(local)
        self.grouped = tuple(tuple(v) for v in keys.values())
        self.sums = nn.CellList([_AllReduceSum(g) for g in keys])

    def construct(self, grads):
        total = ops.zeros((), ms.float32)
        for i in self.local:
            total = total + ops.sum(ops.square(grads[i].astype(ms.float32)))
        for k in range(len(self.grouped)):
            part = ops.zeros((), ms.float32)
            for i in self.grouped[k]:
                part = part + ops.sum(ops.square(grads[i].astype(ms.float32)))
            total = total + self.sums[k](part)
        return ops.sqrt(total)


def sharded_sum_group(param: Parameter, ctx: ParallelContext) -> Group | None:
    """Group over which `param`'s tensor-parallel shards are spread (None when it is replicated)."""
    axes = tuple(a for a in AXES if a not in replica_axes(param))
    return ctx.group(axes) if axes else None


def clip_by_global_norm(grads: tuple, max_norm: float, norm: ms.Tensor) -> tuple:
    """Scale `grads` so that their global norm `norm` is at most `max_norm`."""
    scale = ops.minimum(ms.Tensor(1.0, ms.float32), max_norm / (norm + 1e-6))
    return tuple([g * scale.astype(g.dtype) for g in grads])


def broadcast_parameters(
    params: Sequence[Parameter], ctx: ParallelContext | None = None, root: int = 0
) -> None:
    """Copy every parameter from the rank with index `root` in its replica group to the other replicas.

    Call once after building the model so that all replicas start equal (or seed every rank identically).
    Eager (PyNative) helper; every rank must call it with the same parameter list.
    """
    ctx = ctx or get_parallel_context()
    cells: dict[Group, nn.Cell] = {}
    for p in params:
        group = replica_group(p, ctx)
        if group.size == 1:
            continue
        if group not in cells:
            cells[group] = _BroadcastImpl(group, root, native_supported("broadcast", group))
        p.set_data(cells[group](p.value()))
