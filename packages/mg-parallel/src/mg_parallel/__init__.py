"""Generic distributed-training building blocks on MindSpore's own communication library.

Data parallel, ZeRO-1/2/3, Ulysses sequence parallel, context parallel and tensor parallel, applied to any
model from outside with `parallelize(cell, plan)`; every collective works on CPU (mccl) as well as on
Ascend (HCCL). See the package README for the gradient convention and examples.
"""

from mg_parallel.__about__ import __version__
from mg_parallel.checkpoint import (
    FlatShard,
    TensorShard,
    gather_full_state,
    load_full_checkpoint,
    load_full_state,
    save_full_checkpoint,
)
from mg_parallel.comm import (
    AllGather,
    AllReduce,
    AllToAll,
    Broadcast,
    ReduceScatter,
    all_gather,
    all_reduce,
    all_to_all,
    broadcast,
    native_supported,
    reduce_scatter,
)
from mg_parallel.grads import (
    GlobalNorm,
    GradReducer,
    broadcast_parameters,
    clip_by_global_norm,
    replica_axes,
    sharded_sum_group,
)
from mg_parallel.groups import (
    AXES,
    Group,
    ParallelContext,
    ParallelLayout,
    get_parallel_context,
    init_parallel,
    set_parallel_context,
)
from mg_parallel.mappings import (
    CopyToGroup,
    GatherFromGroup,
    GatherSequenceForTP,
    ReduceFromGroup,
    ReduceScatterSequenceFromTP,
    SplitToGroup,
)
from mg_parallel.plan import ParallelStyle, match_paths, parallelize, wrap_forward
from mg_parallel.sequence import (
    ContextParallelAttention,
    SequenceGatherOutput,
    SequenceShardInput,
    UlyssesAttention,
)
from mg_parallel.tensor import ColumnParallelLinear, ColwiseParallel, RowParallelLinear, RowwiseParallel
from mg_parallel.zero import ZeroOptimizer, all_reduce_mean

__all__ = [
    "AXES",
    "AllGather",
    "AllReduce",
    "AllToAll",
    "Broadcast",
    "ColumnParallelLinear",
    "ColwiseParallel",
    "ContextParallelAttention",
    "CopyToGroup",
    "FlatShard",
    "GatherFromGroup",
    "GatherSequenceForTP",
    "GlobalNorm",
    "GradReducer",
    "Group",
    "ParallelContext",
    "ParallelLayout",
    "ParallelStyle",
    "ReduceFromGroup",
    "ReduceScatter",
    "ReduceScatterSequenceFromTP",
    "RowParallelLinear",
    "RowwiseParallel",
    "SequenceGatherOutput",
    "SequenceShardInput",
    "SplitToGroup",
    "TensorShard",
    "UlyssesAttention",
    "ZeroOptimizer",
    "__version__",
    "all_gather",
    "all_reduce",
    "all_reduce_mean",
    "all_to_all",
    "broadcast",
    "broadcast_parameters",
    "clip_by_global_norm",
    "gather_full_state",
    "get_parallel_context",
    "init_parallel",
    "load_full_checkpoint",
    "load_full_state",
    "match_paths",
    "native_supported",
    "parallelize",
    "reduce_scatter",
    "replica_axes",
    "save_full_checkpoint",
    "set_parallel_context",
    "sharded_sum_group",
    "wrap_forward",
]
