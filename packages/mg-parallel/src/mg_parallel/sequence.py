"""Sequence-dimension styles: shard/gather the token sequence, Ulysses attention and context-parallel attention.

The sequence is split over the cp and sp axes together (shard index `cp_rank * sp + sp_rank`), so a plan
for Ulysses alone, context parallel alone, or both uses the same shard/gather styles. Attention styles wrap
an attention core called as `core(q, k, v, mask)` with q, k, v in BNSD layout `(B, heads, S, head_dim)`
and mask None or broadcastable to `(B, heads, S_q, S_k)` (1 = attend), returning `(B, heads, S_q, head_dim)`.

Masks under sequence parallel: a key dimension of the local length is all-gathered (a key-padding mask
computed from local tokens; its query dimension must then be 1); a dimension of size 1 or of the full length
passes through; a per-head mask is sliced to the local heads under Ulysses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import mindspore as ms
from mindspore import mint, nn

from mg_parallel.comm import AllGather, AllToAll, Impl, _AllGatherImpl, native_supported
from mg_parallel.groups import SEQUENCE_AXES, Group, ParallelContext
from mg_parallel.mappings import GatherFromGroup, SplitToGroup
from mg_parallel.plan import ParallelStyle, wrap_forward


class _SplitArgs(nn.Cell):
    """Pre-hook: split the given positional arguments along their dims (None arguments pass through)."""

    def __init__(self, group: Group, arg_dims: Mapping[int, int], impl: Impl):
        super().__init__()
        indices = sorted(arg_dims)
        self.splitters = nn.CellList([SplitToGroup(group, arg_dims[i], impl) for i in indices])
        slots = [-1] * (indices[-1] + 1)
        for k, i in enumerate(indices):
            slots[i] = k
        self.slots = tuple(slots)

    def construct(self, *args):
        out = []
        for i in range(len(args)):
            k = self.slots[i] if i < len(self.slots) else -1
            if k >= 0 and args[i] is not None:
                out.append(self.splitters[k](args[i]))
            else:
                out.append(args[i])
        return tuple(out)


class _GatherOutput(nn.Cell):
    """Post-hook: gather the output (or element `index` of a tuple output) along `dim`."""

    def __init__(self, group: Group, dim: int, index: int | None, impl: Impl):
        super().__init__()
        self.gather = GatherFromGroup(group, dim, impl)
        self.index = -1 if index is None else index

    def construct(self, out):
        if self.index < 0:
            return self.gather(out)
        items = []
        for i in range(len(out)):
            items.append(self.gather(out[i]) if i == self.index else out[i])
        return tuple(items)


def _axes(axes: str | Iterable[str]) -> tuple[str, ...]:
    return (axes,) if isinstance(axes, str) else tuple(axes)


class SequenceShardInput(ParallelStyle):
    """Split positional inputs of the cell along the sequence before it runs (e.g. x before `blocks[0]`).

    `arg_dims` maps argument index -> sequence dim (default: argument 0, dim 1 for `(B, S, hidden)`).
    The sequence length must divide by the degree of `axes` (cp*sp by default).
    """

    def __init__(
        self,
        arg_dims: Mapping[int, int] | None = None,
        axes: str | Iterable[str] = SEQUENCE_AXES,
        impl: Impl = "auto",
    ):
        self.arg_dims = dict(arg_dims) if arg_dims is not None else {0: 1}
        if not self.arg_dims:
            raise ValueError("SequenceShardInput needs at least one argument to split")
        self.axes = _axes(axes)
        self.impl = impl

    def apply(self, cell: nn.Cell, path: str, ctx: ParallelContext) -> nn.Cell:
        group = ctx.group(self.axes)
        if group.size == 1:
            return cell
        return wrap_forward(cell, pre=_SplitArgs(group, self.arg_dims, self.impl))


class SequenceGatherOutput(ParallelStyle):
    """All-gather the cell's output along the sequence dim after it runs (e.g. after `blocks[-1]`).

    `output_index` selects one element of a tuple output; None gathers the output tensor itself.
    """

    def __init__(
        self,
        dim: int = 1,
        output_index: int | None = None,
        axes: str | Iterable[str] = SEQUENCE_AXES,
        impl: Impl = "auto",
    ):
        self.dim, self.output_index, self.axes, self.impl = dim, output_index, _axes(axes), impl

    def apply(self, cell: nn.Cell, path: str, ctx: ParallelContext) -> nn.Cell:
        group = ctx.group(self.axes)
        if group.size == 1:
            return cell
        return wrap_forward(cell, post=_GatherOutput(group, self.dim, self.output_index, self.impl))


class _MaskForSequence(nn.Cell):
    """Bring a mask to the attention core's view: gather a local key dim, slice heads for Ulysses."""

    def __init__(self, group: Group, heads_group: Group | None):
        super().__init__()
        self.gather_keys = _AllGatherImpl(group, 3, native_supported("all_gather", group))
        self.h_n = 1 if heads_group is None else heads_group.size
        self.h_r = 0 if heads_group is None else heads_group.rank

    def construct(self, mask, local_len, heads):
        if mask is None:
            return mask
        if mask.ndim != 4:
            raise ValueError(f"attention mask must be 4-D (B, heads, S_q, S_k), got shape {mask.shape}")
        if mask.shape[3] != 1 and mask.shape[3] == local_len:
            if mask.shape[2] != 1:
                raise ValueError(
                    f"a mask with local key length {local_len} can only be gathered when its query dim is 1; "
                    f"got shape {mask.shape}: pass a mask over the full key sequence instead"
                )
            dtype = mask.dtype
            mask = self.gather_keys(mask.astype(ms.float32)).astype(dtype)
        if self.h_n > 1 and mask.shape[1] != 1:
            if mask.shape[1] != heads:
                raise ValueError(f"mask head dim {mask.shape[1]} is neither 1 nor the head count {heads}")
            chunk = heads // self.h_n
            mask = mint.narrow(mask, 1, self.h_r * chunk, chunk)
        return mask


class _UlyssesPre(nn.Cell):
    def __init__(self, group: Group, impl: Impl):
        super().__init__()
        self.n = group.size
        self.to_heads = AllToAll(group, 1, 2, impl)  # (B, N, S/n, D) -> (B, N/n, S, D)
        self.mask = _MaskForSequence(group, group)

    def construct(self, q, k, v, mask=None):
        heads = q.shape[1]
        if heads % self.n:
            raise ValueError(
                f"UlyssesAttention: {heads} attention heads are not divisible by the sequence-parallel "
                f"degree {self.n}; choose an sp degree that divides the head count"
            )
        mask = self.mask(mask, k.shape[2], heads)
        return self.to_heads(q), self.to_heads(k), self.to_heads(v), mask


class _UlyssesPost(nn.Cell):
    def __init__(self, group: Group, impl: Impl):
        super().__init__()
        self.to_seq = AllToAll(group, 2, 1, impl)  # (B, N/n, S, D) -> (B, N, S/n, D)

    def construct(self, out):
        return self.to_seq(out)


class UlyssesAttention(ParallelStyle):
    """DeepSpeed-Ulysses around an attention core: sequence-sharded q, k, v are exchanged all-to-all into
    head shards over the full sequence, the core runs on `heads / sp` heads, and the output is exchanged back.

    The head count must divide by the degree of `axes` (sp by default). Apply to self-attention cores;
    cross-attention over replicated text needs no style (its queries are independent rows).
    """

    def __init__(self, axes: str | Iterable[str] = "sp", impl: Impl = "auto"):
        self.axes, self.impl = _axes(axes), impl

    def apply(self, cell: nn.Cell, path: str, ctx: ParallelContext) -> nn.Cell:
        group = ctx.group(self.axes)
        if group.size == 1:
            return cell
        return wrap_forward(cell, pre=_UlyssesPre(group, self.impl), post=_UlyssesPost(group, self.impl))


class _ContextPre(nn.Cell):
    def __init__(self, group: Group, impl: Impl):
        super().__init__()
        self.gather = AllGather(group, 2, impl)  # backward: reduce-scatter of the K/V gradients
        self.mask = _MaskForSequence(group, None)

    def construct(self, q, k, v, mask=None):
        mask = self.mask(mask, k.shape[2], q.shape[1])
        return q, self.gather(k), self.gather(v), mask


class ContextParallelAttention(ParallelStyle):
    """Movie Gen-style context parallel: queries stay local, K and V are all-gathered along the sequence
    (their gradients reduce-scattered back). Compose with Ulysses as `[ContextParallelAttention(),
    UlyssesAttention()]` (Ulysses outermost) when both cp and sp are > 1.
    """

    def __init__(self, axes: str | Iterable[str] = "cp", impl: Impl = "auto"):
        self.axes, self.impl = _axes(axes), impl

    def apply(self, cell: nn.Cell, path: str, ctx: ParallelContext) -> nn.Cell:
        group = ctx.group(self.axes)
        if group.size == 1:
            return cell
        return wrap_forward(cell, pre=_ContextPre(group, self.impl))
