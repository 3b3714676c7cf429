"""Collectives with autograd: all-reduce, all-gather, reduce-scatter, all-to-all and broadcast.

Every collective has two implementations behind one Cell:
- native: MindSpore's own op (HCCL on Ascend, NCCL on GPU; on CPU mccl only has AllReduce everywhere and
  AllGather/Broadcast in the world group);
- emulated: an exact equivalent built from AllReduce(sum), which every backend has in every group:
  all-gather = all-reduce of a zero buffer holding this rank's slot; reduce-scatter = all-reduce + own slice;
  all-to-all = all-gather + slice; broadcast = all-reduce with zeros off the root.
`impl="auto"` (default) takes the native op where the backend has it for that group and the emulation
elsewhere; `"native"` and `"emulated"` force one (tests compare both where both run).

Backward passes are the adjoints of the forward maps over all ranks (the gradient of the sum of every rank's
loss): all-reduce <-> all-reduce, all-gather <-> reduce-scatter, all-to-all(split a, concat b) <->
all-to-all(split b, concat a), broadcast <-> sum to the root. Groups of one rank are identities.
"""

from __future__ import annotations

from typing import Literal

import mindspore as ms
from mindspore import mint, nn, ops
from mindspore.ops import ReduceOp

from mg_parallel.groups import Group

Impl = Literal["auto", "native", "emulated"]
_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast")


class Traffic:
    """Bytes this process hands to each kind of collective (the input tensor's bytes per call, forward and
    backward), counted at the logical op: an emulated all-gather is one all-gather, not the all-reduce inside.
    Counts in PyNative (a `mindspore.jit` graph runs its collectives without calling back into Python); the
    planner (`mg_parallel.planner`) predicts these numbers. Use `with traffic.counting(): ...`."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] = dict.fromkeys(_OPS, 0)
        self.calls: dict[str, int] = dict.fromkeys(_OPS, 0)
        self.enabled = False
        self._depth = 0

    def reset(self) -> None:
        self.bytes = dict.fromkeys(_OPS, 0)
        self.calls = dict.fromkeys(_OPS, 0)

    def counting(self):
        import contextlib

        @contextlib.contextmanager
        def scope():
            self.reset()
            self.enabled = True
            try:
                yield self
            finally:
                self.enabled = False

        return scope()


traffic = Traffic()


class _Counted(nn.Cell):
    """A collective implementation whose calls (in PyNative) are added to `traffic` under `OP`, once: the
    collectives an emulation uses inside are not counted again."""

    OP = ""

    def __call__(self, *args, **kwargs):
        if not traffic.enabled or getattr(self, "trivial", False) or traffic._depth:
            return super().__call__(*args, **kwargs)
        x = args[0][0] if isinstance(args[0], (tuple, list)) else args[0]
        traffic.bytes[self.OP] += int(x.nbytes)
        traffic.calls[self.OP] += 1
        traffic._depth += 1
        try:
            return super().__call__(*args, **kwargs)
        finally:
            traffic._depth -= 1


def device_target() -> str:
    return ms.get_context("device_target")


def native_supported(op: str, group: Group) -> bool:
    """Whether the backend has a native kernel for collective `op` in `group` (measured on MindSpore 2.10)."""
    if op not in _OPS:
        raise ValueError(f"unknown collective {op!r}; expected one of {_OPS}")
    if group.size == 1:
        return False  # nothing to communicate
    if device_target() in ("Ascend", "GPU"):
        return True
    # CPU (mccl): AllReduce(sum) in any group; AllGather and Broadcast only in the world group;
    # no ReduceScatter or AlltoAll kernels at all.
    if op == "all_reduce":
        return True
    if op in ("all_gather", "broadcast"):
        return group.is_world
    return False


def resolve_impl(op: str, group: Group, impl: Impl) -> bool:
    """True for the native op, False for the AllReduce-based emulation (or a group of one rank)."""
    if impl not in ("auto", "native", "emulated"):
        raise ValueError(f"impl must be 'auto', 'native' or 'emulated', got {impl!r}")
    if group.size == 1:
        return False
    if impl == "auto":
        return native_supported(op, group)
    if impl == "native":
        if not native_supported(op, group):
            raise ValueError(
                f"native {op} is not available on {device_target()} in group {group.name!r} "
                f"(size {group.size}, world group: {group.is_world}); use impl='auto' or 'emulated'"
            )
        return True
    return False


def _check_divisible(length: int, n: int, what: str) -> None:
    if length % n:
        raise ValueError(f"{what}: size {length} is not divisible by the group size {n}")


# ---------------------------------------------------------------------------------------------------------
# Forward-only implementations (no autograd); the autograd Cells below pair them as forward and backward.
# ---------------------------------------------------------------------------------------------------------


def _cpu_moves_natively(dtype) -> bool:
    """Dtypes that mccl's AllGather / Broadcast accept on CPU (measured on MindSpore 2.10)."""
    # int64 moves but loses values beyond 32 bits, float64 untested: both take the emulated path
    return dtype == ms.float32 or dtype == ms.float16 or dtype == ms.int32


class _AllReduceSum(_Counted):
    """AllReduce(sum) for every dtype: mccl on CPU only sums float32/float16, so other dtypes are carried
    exactly in float32 (bfloat16 widened; integers and bools as 16-bit pieces, exact for up to 256 ranks)."""

    OP = "all_reduce"

    def __init__(self, group: Group):
        super().__init__()
        self.trivial = group.size == 1
        self.cpu = device_target() == "CPU"
        self.op = None if self.trivial else ops.AllReduce(ReduceOp.SUM, group.name)

    def construct(self, x):
        if self.trivial:
            return x
        if not self.cpu or x.dtype == ms.float32 or x.dtype == ms.float16:
            return self.op(x)
        if x.dtype == ms.bfloat16:
            return self.op(x.astype(ms.float32)).astype(ms.bfloat16)
        if x.dtype == ms.float64:
            raise TypeError(
                "float64 collectives that need an all-reduce are not supported on CPU; use float32"
            )
        if x.dtype == ms.bool_:
            return self.op(x.astype(ms.float32)) > 0.5
        return self._integer_sum(x)

    def _integer_sum(self, x):
        dtype = x.dtype
        rest = x.astype(ms.int64)
        pieces = []
        for _ in range(3):  # three non-negative 16-bit pieces and a signed top piece
            low = rest % 65536
            pieces.append(low)
            rest = (rest - low) // 65536
        pieces.append(rest)
        summed = self.op(ops.stack(pieces).astype(ms.float32)).astype(ms.int64)
        total = (
            summed[0] + summed[1] * 65536 + summed[2] * (65536 * 65536) + summed[3] * (65536 * 65536 * 65536)
        )
        return total.astype(dtype)


class _AllGatherImpl(_Counted):
    OP = "all_gather"

    def __init__(self, group: Group, dim: int, native: bool):
        super().__init__()
        self.n, self.r, self.dim, self.native = group.size, group.rank, dim, native
        self.trivial = group.size == 1
        self.cpu = device_target() == "CPU"
        self.op = ops.AllGather(group.name) if native and not self.trivial else None
        self.sum = _AllReduceSum(group)

    def construct(self, x):
        if self.trivial:
            return x
        dim = self.dim % x.ndim
        if self.native and (not self.cpu or _cpu_moves_natively(x.dtype)):
            if dim == 0:
                return self.op(x)
            y = self.op(ops.swapaxes(x, 0, dim))
            return ops.swapaxes(y, 0, dim)
        shape = x.shape
        d = shape[dim]
        pieces = []
        if self.r > 0:
            pieces.append(ops.zeros(shape[:dim] + (self.r * d,) + shape[dim + 1 :], x.dtype))  # noqa: RUF005 (graph mode)
        pieces.append(x)
        if self.r < self.n - 1:
            tail = (self.n - 1 - self.r) * d
            pieces.append(ops.zeros(shape[:dim] + (tail,) + shape[dim + 1 :], x.dtype))  # noqa: RUF005
        return self.sum(ops.cat(pieces, dim))


class _ReduceScatterImpl(_Counted):
    """`length` (optional) is the input size along `dim` when known up front: then no shape is read at run
    time, which keeps graphs static where MindSpore infers the shape of a native collective's output late."""

    OP = "reduce_scatter"

    def __init__(self, group: Group, dim: int, native: bool, length: int | None = None):
        super().__init__()
        self.n, self.r, self.dim, self.native = group.size, group.rank, dim, native
        self.trivial = group.size == 1
        self.static_chunk = -1 if length is None else length // group.size
        if length is not None:
            _check_divisible(length, group.size, "reduce_scatter")
        self.op = ops.ReduceScatter(ReduceOp.SUM, group.name) if native and not self.trivial else None
        self.sum = _AllReduceSum(group)

    def construct(self, x):
        if self.trivial:
            return x
        dim = self.dim % x.ndim
        if self.native:
            if dim == 0:
                return self.op(x)
            y = self.op(ops.swapaxes(x, 0, dim))
            return ops.swapaxes(y, 0, dim)
        if self.static_chunk >= 0:
            return mint.narrow(self.sum(x), dim, self.r * self.static_chunk, self.static_chunk)
        if x.shape[dim] % self.n != 0:
            raise ValueError(
                f"reduce_scatter: size {x.shape[dim]} is not divisible by the group size {self.n}"
            )
        chunk = x.shape[dim] // self.n
        return mint.narrow(self.sum(x), dim, self.r * chunk, chunk)


class _AllToAllImpl(_Counted):
    OP = "all_to_all"

    def __init__(self, group: Group, split_dim: int, concat_dim: int, native: bool):
        super().__init__()
        if split_dim < 0 or concat_dim < 0:
            raise ValueError(
                f"all_to_all needs non-negative dims, got split {split_dim}, concat {concat_dim}"
            )
        self.n, self.r, self.native = group.size, group.rank, native
        self.split_dim, self.concat_dim = split_dim, concat_dim
        self.trivial = group.size == 1
        self.op = None
        self.gather = None
        if self.trivial:
            pass
        elif native:
            self.op = ops.AlltoAll(group.size, split_dim, concat_dim, group.name)
        else:
            # "all-to-all = all-gather + slice"; the all-gather itself is native where the backend allows.
            self.gather = _AllGatherImpl(group, 0, native_supported("all_gather", group))

    def construct(self, x):
        if self.trivial:
            return x
        if x.shape[self.split_dim] % self.n != 0:
            raise ValueError(
                f"all_to_all: split dimension size {x.shape[self.split_dim]} is not divisible by the group size {self.n}"
            )
        if self.native:
            return self.op(x)
        chunk = x.shape[self.split_dim] // self.n
        everyone = self.gather(ops.expand_dims(x, 0))  # (n, *x.shape): every rank's input
        pieces = []
        for j in range(self.n):
            pieces.append(mint.narrow(everyone[j], self.split_dim, self.r * chunk, chunk))
        return ops.cat(pieces, self.concat_dim)


class _BroadcastImpl(_Counted):
    OP = "broadcast"

    def __init__(self, group: Group, root: int, native: bool):
        super().__init__()
        if not 0 <= root < group.size:
            raise ValueError(f"broadcast root {root} is not an index in a group of {group.size} ranks")
        self.trivial = group.size == 1
        self.native = native
        self.cpu = device_target() == "CPU"
        self.is_root = group.rank == root
        # MindSpore's Broadcast takes the root's global rank
        self.op = ops.Broadcast(group.global_rank(root), group.name) if native and not self.trivial else None
        self.sum = _AllReduceSum(group)

    def construct(self, x):
        if self.trivial:
            return x
        if self.native and (not self.cpu or _cpu_moves_natively(x.dtype)):
            return self.op((x,))[0]
        if self.is_root:
            return self.sum(x)
        return self.sum(ops.zeros_like(x))


# ---------------------------------------------------------------------------------------------------------
# Autograd Cells.
# ---------------------------------------------------------------------------------------------------------


class AllReduce(nn.Cell):
    """Sum over the group; backward sums the output gradients over the group."""

    def __init__(self, group: Group, impl: Impl = "auto"):
        super().__init__()
        resolve_impl("all_reduce", group, impl)
        self.fwd = _AllReduceSum(group)

    def construct(self, x):
        return self.fwd(x)

    def bprop(self, x, out, dout):
        return (self.fwd(dout),)


class AllGather(nn.Cell):
    """Concatenate every rank's tensor along `dim` (rank order); backward reduce-scatters along `dim`."""

    def __init__(self, group: Group, dim: int = 0, impl: Impl = "auto"):
        super().__init__()
        native = resolve_impl("all_gather", group, impl)
        self.native = native
        self.fwd = _AllGatherImpl(group, dim, native)
        self.bwd = _ReduceScatterImpl(
            group, dim, impl != "emulated" and native_supported("reduce_scatter", group)
        )

    def construct(self, x):
        return self.fwd(x)

    def bprop(self, x, out, dout):
        return (self.bwd(dout),)


class ReduceScatter(nn.Cell):
    """Sum over the group and keep this rank's chunk along `dim`; backward all-gathers along `dim`."""

    def __init__(self, group: Group, dim: int = 0, impl: Impl = "auto"):
        super().__init__()
        native = resolve_impl("reduce_scatter", group, impl)
        self.native = native
        self.fwd = _ReduceScatterImpl(group, dim, native)
        self.bwd = _AllGatherImpl(group, dim, impl != "emulated" and native_supported("all_gather", group))

    def construct(self, x):
        return self.fwd(x)

    def bprop(self, x, out, dout):
        return (self.bwd(dout),)


class AllToAll(nn.Cell):
    """Split along `split_dim` into group-size chunks, send chunk j to rank j, concatenate along `concat_dim`.

    Backward is the all-to-all with the two dims swapped.
    """

    def __init__(self, group: Group, split_dim: int, concat_dim: int, impl: Impl = "auto"):
        super().__init__()
        native = resolve_impl("all_to_all", group, impl)
        self.native = native
        self.fwd = _AllToAllImpl(group, split_dim, concat_dim, native)
        self.bwd = _AllToAllImpl(group, concat_dim, split_dim, native)

    def construct(self, x):
        return self.fwd(x)

    def bprop(self, x, out, dout):
        return (self.bwd(dout),)


class Broadcast(nn.Cell):
    """Every rank gets the root's tensor (`root` is an index in the group); backward sums gradients to the root."""

    def __init__(self, group: Group, root: int = 0, impl: Impl = "auto"):
        super().__init__()
        native = resolve_impl("broadcast", group, impl)
        self.native = native
        self.fwd = _BroadcastImpl(group, root, native)
        self.sum = _AllReduceSum(group)
        self.is_root = group.rank == root

    def construct(self, x):
        return self.fwd(x)

    def bprop(self, x, out, dout):
        total = self.sum(dout)
        if self.is_root:
            return (total,)
        return (ops.zeros_like(total),)


# ---------------------------------------------------------------------------------------------------------
# Functional shortcuts for eager (PyNative) code: each builds its Cell once per (group, arguments).
# ---------------------------------------------------------------------------------------------------------

_CACHE: dict[tuple, nn.Cell] = {}


def _cached(cls, group: Group, *args) -> nn.Cell:
    key = (cls, group, *args)
    cell = _CACHE.get(key)
    if cell is None:
        cell = _CACHE[key] = cls(group, *args)
    return cell


def all_reduce(x: ms.Tensor, group: Group, impl: Impl = "auto") -> ms.Tensor:
    """Sum of `x` over the group (differentiable)."""
    return _cached(AllReduce, group, impl)(x)


def all_gather(x: ms.Tensor, group: Group, dim: int = 0, impl: Impl = "auto") -> ms.Tensor:
    """Every rank's `x` concatenated along `dim` in group order (differentiable)."""
    return _cached(AllGather, group, dim, impl)(x)


def reduce_scatter(x: ms.Tensor, group: Group, dim: int = 0, impl: Impl = "auto") -> ms.Tensor:
    """This rank's chunk along `dim` of the sum over the group (differentiable)."""
    return _cached(ReduceScatter, group, dim, impl)(x)


def all_to_all(x: ms.Tensor, group: Group, split_dim: int, concat_dim: int, impl: Impl = "auto") -> ms.Tensor:
    """All-to-all exchange of `x`'s chunks along `split_dim`, concatenated along `concat_dim` (differentiable)."""
    return _cached(AllToAll, group, split_dim, concat_dim, impl)(x)


def broadcast(x: ms.Tensor, group: Group, root: int = 0, impl: Impl = "auto") -> ms.Tensor:
    """The group root's `x` on every rank (`root` is an index in the group; differentiable)."""
    return _cached(Broadcast, group, root, impl)(x)
