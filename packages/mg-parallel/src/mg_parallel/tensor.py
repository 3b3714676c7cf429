"""Tensor parallel (Megatron): column- and row-parallel linear layers, optionally with sequence parallel.

A column-parallel linear holds `out_features / tp` rows of the weight (and bias); a row-parallel linear
holds `in_features / tp` columns and all-reduces its partial outputs before adding the (replicated) bias.
The usual MLP pairs them: `w1` (and a gate) column-parallel without gathering, `w2` row-parallel on the
already split input, so one all-reduce per MLP remains.

Sequence-parallel variant (Megatron-SP): between a row-parallel output and the next column-parallel input the
activations are split along the sequence over the tp group, so norms, residual adds and dropout there run
on 1/tp of the tokens. The column-parallel input then all-gathers the sequence and the row-parallel output
reduce-scatters it; enter and leave that region with `SequenceShardInput(axes="tp")` /
`SequenceGatherOutput(axes="tp")`. Norm weights in the region need no style: their gradients are completed
by the mean over replicas in `GradReducer` (see `mg_parallel.mappings`).

Works on `mint.nn.Linear` and `nn.Dense` (with or without bias and activation); the replacement keeps the
attribute names `weight` and `bias`, so parameter names and checkpoint keys do not change.
"""

from __future__ import annotations

from collections.abc import Iterable

import mindspore as ms
from mindspore import Parameter, mint, nn
from mindspore.common.initializer import Zero, initializer

from mg_parallel.checkpoint import TENSOR_SHARD_ATTR, TensorShard, tensor_chunk
from mg_parallel.comm import Impl
from mg_parallel.grads import set_replica_axes
from mg_parallel.groups import AXES, Group, ParallelContext
from mg_parallel.mappings import (
    CopyToGroup,
    GatherFromGroup,
    GatherSequenceForTP,
    ReduceFromGroup,
    ReduceScatterSequenceFromTP,
    SplitToGroup,
)
from mg_parallel.plan import ParallelStyle


def _linear_parts(cell: nn.Cell, path: str) -> tuple[Parameter, Parameter | None, nn.Cell | None]:
    if isinstance(cell, mint.nn.Linear):
        return cell.weight, cell.bias, None
    if isinstance(cell, nn.Dense):
        return (
            cell.weight,
            (cell.bias if cell.has_bias else None),
            (cell.activation if cell.activation_flag else None),
        )
    raise TypeError(
        f"{path}: tensor-parallel styles apply to mint.nn.Linear or nn.Dense, got {type(cell).__name__}"
    )


def _sharded_param(
    like: Parameter, dim: int, axes: tuple[str, ...], group_size: int, index: int
) -> Parameter:
    """Chunk `index` of `like` along `dim`; an unmaterialised `like` (created under `no_init_parameters`) gives
    an unmaterialised chunk, whose values the caller writes later (sharded initialisation)."""
    if like.has_init:
        shape = list(like.shape)
        shape[dim] //= group_size
        value = initializer(Zero(), tuple(shape), like.dtype)
    else:
        value = ms.Tensor(tensor_chunk(like.asnumpy(), dim, group_size, index))
    param = Parameter(value, name=like.name, requires_grad=like.requires_grad)
    setattr(param, TENSOR_SHARD_ATTR, TensorShard(dim=dim, axes=axes, full_shape=tuple(like.shape)))
    set_replica_axes(param, [a for a in AXES if a not in axes])
    return param


class ColumnParallelLinear(nn.Cell):
    """y = x W_r^T + b_r with this rank's rows W_r of the weight; optionally all-gather y's features."""

    def __init__(
        self,
        weight: Parameter,
        bias: Parameter | None,
        group: Group,
        gather_output: bool = False,
        sequence_parallel: bool = False,
        seq_dim: int = 1,
        activation: nn.Cell | None = None,
        impl: Impl = "auto",
    ):
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.activation = activation
        self.has_activation = activation is not None
        self.enter = GatherSequenceForTP(group, seq_dim, impl) if sequence_parallel else CopyToGroup(group)
        self.gather_output = gather_output
        self.exit = GatherFromGroup(group, -1, impl, scale_grad=False) if gather_output else None

    def construct(self, x):
        x = self.enter(x)
        y = mint.nn.functional.linear(x, self.weight, self.bias)
        if self.has_activation:
            y = self.activation(y)
        if self.gather_output:
            y = self.exit(y)
        return y


class RowParallelLinear(nn.Cell):
    """y = sum_r x_r W_r^T + b with this rank's columns W_r; the sum is an all-reduce (or reduce-scatter)."""

    def __init__(
        self,
        weight: Parameter,
        bias: Parameter | None,
        group: Group,
        input_is_parallel: bool = True,
        sequence_parallel: bool = False,
        seq_dim: int = 1,
        activation: nn.Cell | None = None,
        impl: Impl = "auto",
    ):
        super().__init__()
        self.weight = weight
        self.bias = bias
        self.has_bias = bias is not None
        self.activation = activation
        self.has_activation = activation is not None
        self.input_is_parallel = input_is_parallel
        self.enter = (
            None if input_is_parallel else SplitToGroup(group, -1, impl, "features", scale_grad=False)
        )
        self.exit = (
            ReduceScatterSequenceFromTP(group, seq_dim, impl) if sequence_parallel else ReduceFromGroup(group)
        )

    def construct(self, x):
        if not self.input_is_parallel:
            x = self.enter(x)
        y = self.exit(mint.nn.functional.linear(x, self.weight, None))
        if self.has_bias:
            y = y + self.bias
        if self.has_activation:
            y = self.activation(y)
        return y


def _axes(axes: str | Iterable[str]) -> tuple[str, ...]:
    names = (axes,) if isinstance(axes, str) else tuple(axes)
    return tuple(a for a in AXES if a in names)


class ColwiseParallel(ParallelStyle):
    """Replace a linear layer by a column-parallel one (output features split over `axes`, tp by default).

    `gather_output=True` all-gathers the features afterwards (otherwise the next layer must be row-parallel);
    `sequence_parallel=True` expects its input split along `seq_dim` over the same group and gathers it.
    """

    def __init__(
        self,
        gather_output: bool = False,
        sequence_parallel: bool = False,
        seq_dim: int = 1,
        axes: str | Iterable[str] = "tp",
        impl: Impl = "auto",
    ):
        self.gather_output, self.sequence_parallel, self.seq_dim = gather_output, sequence_parallel, seq_dim
        self.axes, self.impl = _axes(axes), impl

    def apply(self, cell: nn.Cell, path: str, ctx: ParallelContext) -> nn.Cell:
        group = ctx.group(self.axes)
        if group.size == 1:
            return cell
        weight, bias, activation = _linear_parts(cell, path)
        out_features = weight.shape[0]
        if out_features % group.size:
            raise ValueError(
                f"{path}: ColwiseParallel needs out_features {out_features} divisible by the degree {group.size}"
            )
        w = _sharded_param(weight, 0, self.axes, group.size, group.rank)
        b = None
        if bias is not None:
            b = _sharded_param(bias, 0, self.axes, group.size, group.rank)
        return ColumnParallelLinear(
            w, b, group, self.gather_output, self.sequence_parallel, self.seq_dim, activation, self.impl
        )


class RowwiseParallel(ParallelStyle):
    """Replace a linear layer by a row-parallel one (input features split over `axes`, tp by default).

    `input_is_parallel=True` (default) takes the split features of a preceding column-parallel layer;
    `sequence_parallel=True` reduce-scatters the output along `seq_dim` instead of all-reducing it.
    """

    def __init__(
        self,
        input_is_parallel: bool = True,
        sequence_parallel: bool = False,
        seq_dim: int = 1,
        axes: str | Iterable[str] = "tp",
        impl: Impl = "auto",
    ):
        self.input_is_parallel, self.sequence_parallel, self.seq_dim = (
            input_is_parallel,
            sequence_parallel,
            seq_dim,
        )
        self.axes, self.impl = _axes(axes), impl

    def apply(self, cell: nn.Cell, path: str, ctx: ParallelContext) -> nn.Cell:
        group = ctx.group(self.axes)
        if group.size == 1:
            return cell
        weight, bias, activation = _linear_parts(cell, path)
        in_features = weight.shape[1]
        if in_features % group.size:
            raise ValueError(
                f"{path}: RowwiseParallel needs in_features {in_features} divisible by the degree {group.size}"
            )
        w = _sharded_param(weight, 1, self.axes, group.size, group.rank)
        b = None
        if bias is not None:
            b = Parameter(
                bias if bias.has_init else ms.Tensor(bias.asnumpy().copy()),
                name=bias.name,
                requires_grad=bias.requires_grad,
            )
        return RowParallelLinear(
            w, b, group, self.input_is_parallel, self.sequence_parallel, self.seq_dim, activation, self.impl
        )
