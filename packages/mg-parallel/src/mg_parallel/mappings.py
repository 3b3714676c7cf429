"""Region mappings: how activations enter and leave sharded regions, with gradients that keep one invariant.

Invariant (the gradient convention of mg-parallel): every rank of a model-parallel group computes the same
loss; after each parameter's gradient is averaged over the ranks that hold the same copy of it (its replica
group, see `mg_parallel.grads`), it equals the single-process gradient. For that, activation gradients inside
a sequence-sharded region carry a factor of the group size n: leaving the region (gather) multiplies the
gradient by n and entering it (split) divides by n. A parameter used on a sequence shard thus gets n times
its partial gradient, and the mean over the n ranks is the sum of the partials, i.e. the full gradient; a
parameter used on replicated data gets identical gradients that the mean leaves unchanged. This is the scaling
mindone's Movie Gen uses for Ulysses; here it also covers context and Megatron-style sequence parallel.

Tensor-parallel regions (Megatron): `CopyToGroup` enters (identity forward, all-reduce backward),
`ReduceFromGroup` leaves (all-reduce forward, identity backward); no scaling there.
"""

from __future__ import annotations

from mindspore import mint, nn

from mg_parallel.comm import (
    Impl,
    _AllGatherImpl,
    _AllReduceSum,
    _ReduceScatterImpl,
    native_supported,
    resolve_impl,
)
from mg_parallel.groups import Group


def _native(op: str, group: Group, impl: Impl) -> bool:
    if impl == "emulated":
        return False
    if impl == "native":
        return resolve_impl(op, group, impl)
    return native_supported(op, group)


class CopyToGroup(nn.Cell):
    """Enter a tensor-parallel region: identity forward, all-reduce(sum) of the gradient backward."""

    def __init__(self, group: Group):
        super().__init__()
        self.sum = _AllReduceSum(group)

    def construct(self, x):
        return x

    def bprop(self, x, out, dout):
        return (self.sum(dout),)


class ReduceFromGroup(nn.Cell):
    """Leave a tensor-parallel region: all-reduce(sum) forward, identity backward."""

    def __init__(self, group: Group):
        super().__init__()
        self.sum = _AllReduceSum(group)

    def construct(self, x):
        return self.sum(x)

    def bprop(self, x, out, dout):
        return (dout,)


class SplitToGroup(nn.Cell):
    """Enter a sequence-sharded region: keep this rank's chunk along `dim`; backward all-gathers / n.

    `scale_grad=False` drops the 1/n (Megatron's scatter into a tensor-parallel region, whose chunks are
    used by one rank each).
    """

    def __init__(
        self, group: Group, dim: int, impl: Impl = "auto", what: str = "sequence", scale_grad: bool = True
    ):
        super().__init__()
        self.n, self.r, self.dim, self.what = group.size, group.rank, dim, what
        self.trivial = group.size == 1
        self.gather = _AllGatherImpl(group, dim, _native("all_gather", group, impl))
        self.scale = 1.0 / group.size if scale_grad else 1.0

    def construct(self, x):
        if self.trivial:
            return x
        dim = self.dim % x.ndim
        length = x.shape[dim]
        if length % self.n:
            raise ValueError(
                f"{self.what} length {length} (dim {dim} of shape {x.shape}) is not divisible by the "
                f"parallel degree {self.n}"
            )
        chunk = length // self.n
        return mint.narrow(x, dim, self.r * chunk, chunk)

    def bprop(self, x, out, dout):
        if self.trivial:
            return (dout,)
        return (self.gather(dout) * self.scale,)


class GatherFromGroup(nn.Cell):
    """Leave a sequence-sharded region: all-gather along `dim`; backward keeps this rank's chunk x n.

    `scale_grad=False` drops the factor n (Megatron's gather of column-parallel outputs).
    """

    def __init__(self, group: Group, dim: int, impl: Impl = "auto", scale_grad: bool = True):
        super().__init__()
        self.n, self.r, self.dim = group.size, group.rank, dim
        self.trivial = group.size == 1
        self.gather = _AllGatherImpl(group, dim, _native("all_gather", group, impl))
        self.scale = float(group.size) if scale_grad else 1.0

    def construct(self, x):
        return self.gather(x)

    def bprop(self, x, out, dout):
        if self.trivial:
            return (dout,)
        dim = self.dim % dout.ndim
        chunk = dout.shape[dim] // self.n
        return (mint.narrow(dout, dim, self.r * chunk, chunk) * self.scale,)


class GatherSequenceForTP(nn.Cell):
    """Megatron sequence parallel, into a column-parallel layer: all-gather the sequence along `dim`.

    Backward reduce-scatters the partial input gradients of the column shards and scales by n, so the
    sequence-sharded region around it keeps the factor n of the convention above.
    """

    def __init__(self, group: Group, dim: int, impl: Impl = "auto"):
        super().__init__()
        self.trivial = group.size == 1
        self.gather = _AllGatherImpl(group, dim, _native("all_gather", group, impl))
        self.scatter = _ReduceScatterImpl(group, dim, _native("reduce_scatter", group, impl))
        self.scale = float(group.size)

    def construct(self, x):
        return self.gather(x)

    def bprop(self, x, out, dout):
        if self.trivial:
            return (dout,)
        return (self.scatter(dout) * self.scale,)


class ReduceScatterSequenceFromTP(nn.Cell):
    """Megatron sequence parallel, out of a row-parallel layer: sum the partial outputs, keep own sequence chunk.

    Backward all-gathers the gradient and divides by n (leaving the factor n of the sharded region).
    """

    def __init__(self, group: Group, dim: int, impl: Impl = "auto"):
        super().__init__()
        self.trivial = group.size == 1
        self.scatter = _ReduceScatterImpl(group, dim, _native("reduce_scatter", group, impl))
        self.gather = _AllGatherImpl(group, dim, _native("all_gather", group, impl))
        self.scale = 1.0 / group.size

    def construct(self, x):
        return self.scatter(x)

    def bprop(self, x, out, dout):
        if self.trivial:
            return (dout,)
        return (self.gather(dout) * self.scale,)
