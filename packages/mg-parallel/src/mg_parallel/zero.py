"""ZeRO stages 0-3 around any element-wise MindSpore optimizer (AdamW, Adam, SGD, AdamWeightDecay, ...).

Each parameter is sharded over its replica group (all ranks by default; the non-tp ranks for a
tensor-parallel slice): flattened, zero-padded to a multiple of the group size n, and cut into n chunks.
- stage 0: plain data parallel; gradients all-reduced (mean), full optimizer state on every rank.
- stage 1: optimizer state for this rank's chunk only; gradients all-reduced in full, then sliced.
- stage 2: + gradients sharded as they are produced: each cell that owns a sharded parameter reads it through
  a property whose backward reduce-scatters the parameter's gradient into this rank's chunk right away, so
  the backward pass never holds more than one full gradient at a time. The model keeps its full parameters;
  `zero.params` are the chunks (differentiate with respect to them), which the optimizer updates.
- stage 3: + parameters stored as chunks; each is all-gathered when its cell reads it and released after
  use, its gradient reduce-scattered by the gather's backward.
In stages 1 and 2 the optimizer updates a chunk copy of each parameter, which is then all-gathered back into
the full parameter. The optimizer is built by `make_optimizer(params)` on the chunks, so any optimizer whose
update is element-wise works (not LAMB/Adafactor-style ones that need whole-tensor statistics). Chunk copies
are named `mg_zero.<name>` in stage 1 and `<name>` in stages 2-3 (where they are also `zero.params`), so
name-based parameter groups (e.g. no weight decay on biases) still match.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import mindspore as ms
import numpy as np
from mindspore import Parameter, mint, nn, ops
from mindspore.common.initializer import Zero, initializer

from mg_parallel.checkpoint import (
    FLAT_SHARD_ATTR,
    TENSOR_SHARD_ATTR,
    FlatShard,
    flat_chunk,
    shard_like,
    unshard,
)
from mg_parallel.comm import _AllGatherImpl, _AllReduceSum, _ReduceScatterImpl, native_supported
from mg_parallel.grads import (
    REPLICA_AXES_ATTR,
    GlobalNorm,
    GradReducer,
    _buckets,
    clip_by_global_norm,
    replica_axes,
    set_replica_axes,
)
from mg_parallel.groups import AXES, Group, ParallelContext, get_parallel_context

SHARD_PREFIX = "mg_zero."
FULL_PREFIX = "mg_zero.full."


def _copy_layout(src: Parameter, dst: Parameter) -> None:
    for attr in (TENSOR_SHARD_ATTR, REPLICA_AXES_ATTR):
        if hasattr(src, attr):
            setattr(dst, attr, getattr(src, attr))


def _zeros(n: int, dtype) -> ms.Tensor:
    return ops.zeros((n,), dtype)


class _GatherFlatParam(nn.Cell):
    """ZeRO-3: all-gather a flat chunk into the full tensor; backward reduce-scatters the gradient (mean)."""

    def __init__(self, group: Group, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.numel = int(math.prod(shape))
        padded = group.size * (-(-self.numel // group.size))
        self.pad = padded - self.numel
        self.gather = _AllGatherImpl(group, 0, native_supported("all_gather", group))
        self.scatter = _ReduceScatterImpl(group, 0, native_supported("reduce_scatter", group), length=padded)
        self.scale = 1.0 / group.size

    def construct(self, shard):
        return ops.reshape(mint.narrow(self.gather(shard), 0, 0, self.numel), self.shape)

    def bprop(self, shard, out, dout):
        flat = ops.reshape(dout, (-1,))
        if self.pad > 0:
            flat = ops.cat([flat, _zeros(self.pad, flat.dtype)])
        return (self.scatter(flat) * self.scale,)


class _ScatterGradParam(nn.Cell):
    """ZeRO-2: the full copy of a parameter as it is; backward reduce-scatters its gradient (mean) into the chunk.

    `cell(chunk)` returns `full` (this rank's full copy of the parameter, no copy made), and the gradient
    flowing into it comes out as the gradient of `chunk`: this rank's piece of the flattened, zero-padded
    gradient averaged over the replica group. The full gradient lives only inside this backward. `full` is
    read from here, not passed in, and not registered on any cell: PyNative copies an input that a cell with a
    custom bprop returns unchanged (a full copy of every parameter, kept until the backward)."""

    def __init__(self, full: Parameter, group: Group):
        super().__init__()
        object.__setattr__(self, "mg_full", full)
        self.numel = int(math.prod(full.shape))
        padded = group.size * (-(-self.numel // group.size))
        self.pad = padded - self.numel
        self.scatter = _ReduceScatterImpl(group, 0, native_supported("reduce_scatter", group), length=padded)
        self.scale = 1.0 / group.size

    def construct(self, chunk):
        return self.mg_full

    def bprop(self, chunk, out, dout):
        flat = ops.reshape(dout, (-1,))
        if self.pad > 0:
            flat = ops.cat([flat, _zeros(self.pad, flat.dtype)])
        return (self.scatter(flat) * self.scale,)


def _install_properties(cell: nn.Cell, readers: dict[str, nn.Cell], prefix: str) -> None:
    """Make `cell.<attr>` return `readers[attr](chunk)` for each sharded attribute (class swap + property)."""

    def make_getter(attr: str, name: str):
        def getter(self):
            return getattr(self, name)(self._params[attr])

        return getter

    props = {}
    for attr, reader in readers.items():
        name = f"{prefix}_{attr}"
        setattr(cell, name, reader)
        props[attr] = property(make_getter(attr, name))
    base = type(cell)
    cell.__class__ = type(base.__name__, (base,), {**props, "__module__": base.__module__})


def _shard_in_place(
    network: nn.Cell,
    params: Sequence[Parameter],
    ctx: ParallelContext,
    make_reader: Callable[[Parameter, Group], nn.Cell],
    prefix: str,
) -> list[Parameter]:
    """Replace each of `params` whose replica group has more than one rank by its flat chunk inside `network`;
    every cell owning one then reads `make_reader(original, group)(chunk)` for it. Returns the chunks (the
    parameter itself where the group has one rank), in order."""
    targets = {id(p): p for p in params}
    shards: dict[int, Parameter] = {}
    readers: dict[int, Callable[[], nn.Cell]] = {}
    for p in params:
        group = ctx.group(replica_axes(p))
        if group.size == 1:
            continue
        if p.has_init:  # unmaterialised (no_init_parameters): the chunk too; its values are written later
            value = initializer(Zero(), (-(-int(math.prod(p.shape)) // group.size),), p.dtype)
        else:
            value = ms.Tensor(flat_chunk(p.asnumpy(), group.size, group.rank))
        shard = Parameter(value, name=p.name, requires_grad=p.requires_grad)
        _copy_layout(p, shard)
        setattr(shard, FLAT_SHARD_ATTR, FlatShard(axes=replica_axes(p), shape=tuple(p.shape)))
        set_replica_axes(shard, ())  # every rank holds a different chunk: nothing to average or broadcast
        shards[id(p)] = shard
        readers[id(p)] = make_reader(p, group)
    found: set[int] = set()
    for _, cell in list(network.cells_and_names()):
        cell_readers = {}
        for attr, p in list(cell._params.items()):
            if p is None or id(p) not in shards:
                continue
            found.add(id(p))
            cell_readers[attr] = readers[id(p)]()
            cell._params[attr] = shards[id(p)]
        if cell_readers:
            _install_properties(cell, cell_readers, prefix)
    lost = [targets[i].name for i in shards if i not in found]
    if lost:
        raise ValueError(
            f"ZeRO could not find the cells owning parameters {lost[:10]} (not direct attributes)"
        )
    return [shards.get(id(p), p) for p in params]


def shard_parameters_zero3(
    network: nn.Cell, params: Sequence[Parameter], ctx: ParallelContext
) -> list[Parameter]:
    """Replace `params` inside `network` by flat chunks over their replica groups (ZeRO-3), in place.

    Returns the parameters in the same order: the chunk for each sharded one, the parameter itself when its
    replica group has one rank. Cells read the full tensor through an all-gather on every access.
    """

    def make_reader(p: Parameter, group: Group):
        return lambda: _GatherFlatParam(group, tuple(p.shape))

    return _shard_in_place(network, params, ctx, make_reader, "mg_zero3_gather")


def shard_gradients_zero2(
    network: nn.Cell, params: Sequence[Parameter], ctx: ParallelContext
) -> tuple[list[Parameter], list[Parameter]]:
    """Shard gradients as the backward pass produces them (ZeRO-2): like `shard_parameters_zero3`, `network`'s
    parameters become flat chunks, but each cell reads a full copy of its parameter kept on this rank (no
    gather), whose gradient its backward reduce-scatters into the chunk's (see `_ScatterGradParam`), in place.

    Returns (chunks, full copies), both aligned with `params` (the parameter itself where its replica group has
    one rank). The full copies are parameters named `mg_zero.full.<name>` that no cell registers (a graph needs
    distinct names); after writing the chunks, refresh them with `ZeroOptimizer.sync_shards_from_model`.
    """
    copies: dict[int, Parameter] = {}

    def make_reader(p: Parameter, group: Group):
        value = initializer(Zero(), tuple(p.shape), p.dtype) if p.has_init else p.value()
        full = Parameter(value, name=FULL_PREFIX + p.name, requires_grad=True)  # False: PyNative skips bprop
        _copy_layout(p, full)
        copies[id(p)] = full
        return lambda: _ScatterGradParam(full, group)

    chunks = _shard_in_place(network, params, ctx, make_reader, "mg_zero2_scatter")
    return chunks, [copies.get(id(p), p) for p in params]


def _chunk_copy(param: Parameter, group: Group, name: str) -> Parameter:
    """ZeRO-1: a new parameter holding this rank's flat chunk of `param` over `group` (layout attributes too)."""
    chunk = Parameter(
        ms.Tensor(flat_chunk(param.asnumpy(), group.size, group.rank)),
        name=name,
        requires_grad=param.requires_grad,
    )
    _copy_layout(param, chunk)
    setattr(chunk, FLAT_SHARD_ATTR, FlatShard(axes=replica_axes(param), shape=tuple(param.shape)))
    chunk.mg_source_name = param.name
    return chunk


class _ShardBuckets(nn.Cell):
    """Bucketed all-gather of chunks into full tensors (stages 1-2: the updated chunks back into the model)."""

    def __init__(self, infos: list[tuple[int, Group, tuple[int, ...], object]], count: int, bucket_mb: float):
        super().__init__(auto_prefix=False)
        self.count = count
        groups = {i: g for i, g, _, _ in infos}
        shapes = {i: s for i, _, s, _ in infos}
        numel = {i: int(math.prod(s)) for i, s in shapes.items()}
        chunk = {i: -(-numel[i] // groups[i].size) for i in groups}
        items = [(i, numel[i] * 4, (g, dt)) for i, g, _, dt in infos]
        buckets = _buckets(items, int(bucket_mb * 2**20))
        self.members = tuple(tuple(b) for b in buckets)
        self.sizes = tuple(groups[b[0]].size for b in buckets)
        self.numel = tuple(numel.get(i, 0) for i in range(count))
        self.chunk = tuple(chunk.get(i, 0) for i in range(count))
        self.shape = tuple(shapes.get(i, ()) for i in range(count))
        self.gathers = nn.CellList(
            [_AllGatherImpl(groups[b[0]], 0, native_supported("all_gather", groups[b[0]])) for b in buckets]
        )
        place = [(-1, 0)] * count
        for k, members in enumerate(buckets):
            offset = 0
            for i in members:
                place[i] = (k, offset)
                offset += chunk[i]
        self.place = tuple(place)

    def gather(self, chunks):
        """Chunks -> full tensors (entries outside any bucket come back as given)."""
        full = []
        for k in range(len(self.members)):
            n = self.sizes[k]
            local = ops.cat([chunks[i] for i in self.members[k]])
            full.append(ops.reshape(self.gathers[k](local), (n, -1)))
        out = []
        for i in range(self.count):
            k, offset = self.place[i]
            if k < 0:
                out.append(chunks[i])
            else:
                rows = mint.narrow(full[k], 1, offset, self.chunk[i])
                flat = mint.narrow(ops.reshape(rows, (-1,)), 0, 0, self.numel[i])
                out.append(ops.reshape(flat, self.shape[i]))
        return tuple(out)


class ZeroReducer(nn.Cell):
    """Stage-dependent gradient reduction: full means (stages 0, 1); identity in stages 2-3, where the backward
    pass already reduce-scattered each gradient into this rank's chunk of the mean."""

    def __init__(self, stage: int, reducer: GradReducer | None, shapes: Sequence[tuple[int, ...]]):
        super().__init__(auto_prefix=False)
        self.stage = stage
        self.reducer = reducer
        self.shapes = tuple(tuple(s) for s in shapes)

    def __call__(self, grads, *args, **kwargs):
        if self.stage >= 2:  # PyNative only (a graph calls construct): catch gradients of the full parameters
            for i, (g, shape) in enumerate(zip(grads, self.shapes, strict=True)):
                if tuple(g.shape) != shape:
                    raise ValueError(
                        f"ZeRO stage {self.stage}: gradient {i} has shape {tuple(g.shape)}, expected {shape}; "
                        "differentiate the loss with respect to zero.params (chunks of the sharded parameters)"
                    )
        return super().__call__(grads, *args, **kwargs)

    def construct(self, grads):
        if self.stage <= 1:
            return self.reducer(grads)
        return grads


class ZeroUpdater(nn.Cell):
    """Stage-dependent update: slice (stage 1), run the optimizer on chunks, all-gather into the model."""

    def __init__(
        self,
        stage: int,
        optimizer: nn.Cell,
        opt_order: tuple[int, ...],
        model_params: Sequence[Parameter],
        shard_params: Sequence[Parameter],
        sharded: tuple[bool, ...],
        slices: tuple[tuple[int, int, int, int], ...],
        buckets: _ShardBuckets | None,
    ):
        super().__init__(auto_prefix=False)
        self.stage = stage
        self.optimizer = optimizer
        self.opt_order = opt_order
        # not registered on this cell: stage 2 writes its full copies, which belong to no cell
        object.__setattr__(self, "model_params", ms.ParameterTuple(model_params))
        self.shard_params = ms.ParameterTuple(shard_params)
        self.sharded = sharded
        self.slices = slices  # per param: (n, rank, chunk, numel)
        self.buckets = buckets
        self.count = len(sharded)
        self.gather_back = stage in (1, 2) and any(sharded)

    def _own_chunk(self, g, i):
        n, rank, chunk, numel = self.slices[i]
        flat = ops.reshape(g, (-1,))
        pad = n * chunk - numel
        if pad > 0:
            flat = ops.cat([flat, _zeros(pad, flat.dtype)])
        return mint.narrow(flat, 0, rank * chunk, chunk)

    def construct(self, grads):
        if self.stage == 1:
            grads = tuple(
                [self._own_chunk(grads[i], i) if self.sharded[i] else grads[i] for i in range(self.count)]
            )
        ordered = tuple([grads[i] for i in self.opt_order])
        done = self.optimizer(ordered)
        if self.gather_back:
            chunks = tuple([ops.depend(self.shard_params[i], done) for i in range(self.count)])
            full = self.buckets.gather(chunks)
            for i in range(self.count):
                if self.sharded[i]:
                    ops.assign(self.model_params[i], full[i])
        return done


class ZeroOptimizer(nn.Cell):
    """Data parallel + ZeRO stage 0-3 optimizer for `network`.

    `make_optimizer(params)` builds the real optimizer on the parameters this rank updates (chunks for stages
    1-3). Differentiate the loss with respect to `zero.params` (the network's trainable parameters in stages
    0-1; in stages 2-3 this rank's chunk of each sharded one, whose gradient the backward pass reduce-scatters
    as it goes), then call `zero(grads)`: reduce, optionally clip by global norm, update; it returns the
    global gradient norm. The three steps are also sub-cells: `zero.reducer`, `zero.norm`, `zero.updater`.
    """

    def __init__(
        self,
        network: nn.Cell,
        make_optimizer: Callable[[list[Parameter]], nn.Cell],
        stage: int = 2,
        ctx: ParallelContext | None = None,
        clip_norm: float | None = None,
        bucket_mb: float = 32.0,
        params: Sequence[Parameter] | None = None,
    ):
        super().__init__(auto_prefix=False)
        if stage not in (0, 1, 2, 3):
            raise ValueError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage!r}")
        ctx = ctx or get_parallel_context()
        self.ctx = ctx
        self.stage = stage
        self.clip = clip_norm is not None
        self.clip_norm = float(clip_norm) if clip_norm is not None else 0.0
        params = list(params if params is not None else network.trainable_params())
        groups = [ctx.group(replica_axes(p)) for p in params]
        full_params = list(params)  # as the network held them before any sharding
        model_bytes = sum(p.nbytes for p in network.get_parameters())
        # what the forward reads and the updater writes, aligned with zero.params: the parameters themselves
        # (stages 0, 1, 3) or their full copies (stage 2)
        forward_params = None
        if stage == 3:
            params = shard_parameters_zero3(network, params, ctx)
            model_bytes = sum(p.nbytes for p in network.get_parameters())
        elif stage == 2:
            params, forward_params = shard_gradients_zero2(network, params, ctx)
        self.params = ms.ParameterTuple(params)
        sharded = tuple(g.size > 1 for g in groups) if stage >= 1 else tuple(False for _ in groups)
        self.sharded = sharded
        # parameters the optimizer updates: chunk copies in stage 1, zero.params otherwise
        if stage == 1:
            shard_params = [
                _chunk_copy(p, g, SHARD_PREFIX + p.name) if is_sharded else p
                for p, g, is_sharded in zip(params, groups, sharded, strict=True)
            ]
        else:
            shard_params = list(params)
        self.shard_params = ms.ParameterTuple(shard_params)
        forward_params = tuple(forward_params if forward_params is not None else params)
        object.__setattr__(self, "_forward_params", forward_params)  # stage 2's full copies: no cell's
        self._model_bytes = model_bytes
        optimizer = make_optimizer(list(shard_params))
        index = {id(p): i for i, p in enumerate(shard_params)}
        opt_params = list(optimizer.parameters)
        if sorted(index.get(id(p), -1) for p in opt_params) != list(range(len(shard_params))):
            raise ValueError(
                "make_optimizer must build an optimizer over exactly the parameters it is given "
                f"({len(shard_params)}); it has {len(opt_params)}"
            )
        opt_order = tuple(index[id(p)] for p in opt_params)
        self.optimizer = optimizer

        infos = [
            (i, g, tuple(p.shape), p.dtype)
            for i, (p, g, s) in enumerate(zip(full_params, groups, sharded, strict=True))
            if s and stage in (1, 2)
        ]
        buckets = _ShardBuckets(infos, len(params), bucket_mb) if infos else None
        reducer = GradReducer(params, ctx, bucket_mb) if stage <= 1 else None
        self.reducer = ZeroReducer(stage, reducer, [tuple(p.shape) for p in params])
        slices = tuple(
            (g.size, g.rank, -(-int(math.prod(p.shape)) // g.size), int(math.prod(p.shape)))
            for p, g in zip(full_params, groups, strict=True)
        )
        self.updater = ZeroUpdater(
            stage, optimizer, opt_order, forward_params, shard_params, sharded, slices, buckets
        )
        self.norm = GlobalNorm(
            [self._norm_group(p, g, s) for p, g, s in zip(full_params, groups, sharded, strict=True)]
        )

    def _norm_group(self, param: Parameter, group: Group, sharded: bool) -> Group | None:
        """Group over which the reduced gradient of `param` holds distinct pieces."""
        axes = set(a for a in AXES if a not in replica_axes(param))  # tensor-parallel slices
        if sharded and self.stage >= 2:
            axes |= set(replica_axes(param))  # ZeRO chunks
        return self.ctx.group(tuple(a for a in AXES if a in axes)) if axes else None

    def construct(self, grads):
        reduced = self.reducer(grads)
        norm = self.norm(reduced)
        if self.clip:
            reduced = clip_by_global_norm(reduced, self.clip_norm, norm)
        self.updater(reduced)
        return norm

    # ---------------------------------------------------------------------------------------------------
    # State: full (gathered) views for checkpoints, loadable into any layout.
    # ---------------------------------------------------------------------------------------------------

    def _optimized_layouts(self) -> list[tuple[Parameter, str]]:
        out = []
        for p, shard in zip(self.params, self.shard_params, strict=True):
            out.append((shard, p.name))
        return out

    def _state_entries(self) -> list[tuple[str, Parameter, Parameter | None]]:
        """(key, state parameter, layout parameter or None for scalars) for the optimizer's own state."""
        optimized = self._optimized_layouts()
        own = {id(s) for s, _ in optimized}
        entries = []
        for q in self.optimizer.get_parameters():
            if id(q) in own:
                continue
            match = None
            for shard, source in optimized:
                if q.name.endswith("." + shard.name) and tuple(q.shape) == tuple(shard.shape):
                    match = (q.name[: -len(shard.name) - 1] + "." + source, q, shard)
                    break
            entries.append(match if match is not None else (q.name, q, None))
        return entries

    def state_tensors(self) -> list[tuple[str, Parameter, Parameter | None]]:
        """This rank's optimizer state: (key, state tensor, parameter whose layout it has, or None for scalars
        such as step counters); keys are `<state>.<parameter name>` as in `optimizer_state_dict`."""
        return self._state_entries()

    def optimizer_state_dict(self) -> dict[str, np.ndarray]:
        """Full optimizer state as `{"<state>.<param name>": array of the parameter's full shape, ...}` plus
        scalars (step counters, learning rate) by their own names. All ranks must call it (collectives)."""
        return {
            key: (unshard(q.value(), layout, self.ctx) if layout is not None else q.asnumpy().copy())
            for key, q, layout in self._state_entries()
        }

    def load_optimizer_state_dict(
        self, state: Mapping[str, np.ndarray], source: str = "optimizer state"
    ) -> None:
        """Load a full optimizer state (from `optimizer_state_dict`, any layout) into this rank's shards."""
        entries = self._state_entries()
        keys = {k for k, _, _ in entries}
        missing = sorted(keys - set(state))
        unexpected = sorted(set(state) - keys)
        if missing or unexpected:
            raise ValueError(f"{source}: missing keys {missing[:20]}, unexpected keys {unexpected[:20]}")
        for key, q, layout in entries:
            array = np.asarray(state[key])
            piece = shard_like(array, layout, self.ctx) if layout is not None else array
            if piece.size != math.prod(q.shape):
                raise ValueError(
                    f"{source}: {key} has shape {array.shape}, which does not fit {tuple(q.shape)}"
                )
            q.set_data(ms.Tensor(piece.reshape(q.shape).astype(ms.dtype_to_nptype(q.dtype))))

    def sync_shards_from_model(self) -> None:
        """Make ZeRO's own copies agree with the model's parameters after they were written (a checkpoint load,
        an initialisation): stage 1 cuts its chunk copies from the parameters; stage 2 all-gathers the model's
        chunks into the full copies the forward reads. All ranks must call it (stage 2: collectives)."""
        if self.stage == 2:
            self._gather_full_copies()
            return
        for p, shard in zip(self._forward_params, self.shard_params, strict=True):
            if shard is not p:  # p holds this rank's tensor-parallel slice already: cut its flat chunk only
                group = self.ctx.group(getattr(shard, FLAT_SHARD_ATTR).axes)
                shard.set_data(ms.Tensor(flat_chunk(p.asnumpy(), group.size, group.rank)))

    def _gather_full_copies(self) -> None:
        """Stage 2: full copy <- all-gather of the chunk, one parameter at a time (eager)."""
        gathers: dict[Group, nn.Cell] = {}
        for full, chunk in zip(self._forward_params, self.params, strict=True):
            if full is chunk:
                continue
            group = self.ctx.group(getattr(chunk, FLAT_SHARD_ATTR).axes)
            if group not in gathers:
                gathers[group] = _AllGatherImpl(group, 0, native_supported("all_gather", group))
            numel = int(math.prod(full.shape))
            value = ops.reshape(mint.narrow(gathers[group](chunk.value()), 0, 0, numel), full.shape)
            if full.has_init:  # built lazily, never materialised: this is its first value
                full.set_data(value)
            else:
                ops.assign(full, value)  # in place: compiled graphs keep reading the same buffer

    def memory_report(self, reduced_grads: Sequence[ms.Tensor] | None = None) -> dict[str, int]:
        """Bytes this rank holds: model parameters, gradients after reduction, optimizer state, chunk copies.

        Pass the output of `zero.reducer(grads)` to measure gradient bytes; otherwise they are computed from
        the shapes the reducer returns.
        """
        model = self._model_bytes
        pairs = list(zip(self._forward_params, self.shard_params, strict=True))
        copies = sum(s.nbytes for p, s in pairs if s is not p)
        state = sum(q.nbytes for _, q, _ in self._state_entries())
        if reduced_grads is not None:
            grads = sum(g.nbytes for g in reduced_grads)
        else:
            grads = 0
            for (p, s), is_sharded in zip(pairs, self.sharded, strict=True):
                grads += s.nbytes if (is_sharded and self.stage >= 2) else p.nbytes
        return {"params": model, "grads": grads, "optimizer_state": state, "shard_copies": copies}


def all_reduce_mean(value: ms.Tensor, group: Group) -> ms.Tensor:
    """Mean of a tensor over a group (e.g. a loss for logging)."""
    if group.size == 1:
        return value
    return _AllReduceSum(group)(value) / group.size
