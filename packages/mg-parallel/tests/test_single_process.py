"""Fast tests in one process: layouts, plans, wrapping, sharding math, checkpoints, ZeRO plumbing at world 1."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
from mindspore import mint, nn
from mindspore.experimental.optim import AdamW

import mg_parallel as mp
from mg_parallel.checkpoint import FlatShard, TensorShard, flat_chunk, shard_like, tensor_chunk, unshard
from mg_parallel.comm import native_supported, resolve_impl
from mg_parallel.groups import ParallelContext, ParallelLayout
from mg_parallel.testing import CaseError, CaseResults, run_cases
from mg_parallel.testing._worker import resolve_target
from mg_parallel.testing.models import MLPStack, ToyTransformer, build


@pytest.fixture(autouse=True)
def _single_process_context():
    mp.set_parallel_context(None)
    yield
    mp.set_parallel_context(None)


# ---------------------------------------------------------------------------------------------------------
# Layouts and groups
# ---------------------------------------------------------------------------------------------------------


def test_layout_coordinates_put_tp_innermost():
    layout = ParallelLayout(dp=2, cp=1, sp=2, tp=2)
    assert layout.coords(0) == {"dp": 0, "cp": 0, "sp": 0, "tp": 0}
    assert layout.coords(5) == {"dp": 1, "cp": 0, "sp": 0, "tp": 1}
    assert all(layout.rank_of(layout.coords(r)) == r for r in range(8))
    assert layout.group_ranks("tp", 5) == (4, 5)
    assert layout.group_ranks("sp", 5) == (5, 7)
    assert layout.group_ranks("dp", 5) == (1, 5)
    assert layout.group_ranks(("dp", "sp"), 0) == (0, 2, 4, 6)
    assert layout.group_ranks("world", 3) == tuple(range(8))


@pytest.mark.parametrize("axes", ["dp", "tp", ("cp", "sp"), ("dp", "cp", "sp")])
def test_groups_along_axes_partition_the_world(axes):
    layout = ParallelLayout(dp=2, cp=2, sp=2, tp=1)
    groups = layout.all_groups(axes)
    flat = sorted(r for g in groups for r in g)
    assert flat == list(range(8))
    assert all(len(g) == layout.degree(axes) for g in groups)


def test_sequence_shard_index_is_cp_major():
    layout = ParallelLayout(cp=2, sp=2)
    group = layout.group_ranks(("cp", "sp"), 0)
    # shard index = cp_rank * sp + sp_rank, which is the position in the group
    for index, rank in enumerate(group):
        c = layout.coords(rank)
        assert index == c["cp"] * 2 + c["sp"]


def test_inconsistent_degrees_name_the_product():
    with pytest.raises(ValueError, match=r"dp\*cp\*sp\*tp = 2\*1\*2\*1 = 4 does not equal the world size 6"):
        ParallelLayout(dp=2, sp=2).check(6)
    with pytest.raises(ValueError, match=r"world size 6 is not divisible by cp\*sp\*tp = 1\*4\*1 = 4"):
        ParallelLayout.for_world(6, sp=4)
    with pytest.raises(ValueError, match="positive int"):
        ParallelLayout(sp=0)
    with pytest.raises(ValueError, match="unknown parallel axis"):
        ParallelLayout().degree("pp")
    assert ParallelLayout.for_world(8, sp=2, tp=2).dp == 2


def test_single_process_context_is_trivial():
    ctx = mp.init_parallel()
    assert (ctx.world_size, ctx.rank_id) == (1, 0)
    assert ctx.rank("sp") == 0 and ctx.size(("dp", "tp")) == 1
    assert ctx.sp_group.size == 1 and ctx.world_group.size == 1
    assert mp.get_parallel_context() is ctx


def test_native_collective_table_on_cpu():
    world = mp.Group("mccl_world_group", (0, 1), 0, is_world=True)
    sub = mp.Group("sub", (0, 2), 0)
    assert native_supported("all_reduce", sub)
    assert native_supported("all_gather", world) and not native_supported("all_gather", sub)
    assert native_supported("broadcast", world) and not native_supported("broadcast", sub)
    assert not native_supported("reduce_scatter", world)
    assert not native_supported("all_to_all", world)
    with pytest.raises(ValueError, match="native all_to_all is not available on CPU"):
        resolve_impl("all_to_all", world, "native")
    with pytest.raises(ValueError, match="impl must be"):
        resolve_impl("all_gather", world, "fast")


# ---------------------------------------------------------------------------------------------------------
# Plans and wrapping
# ---------------------------------------------------------------------------------------------------------


def test_plan_patterns_select_paths():
    model = build(ToyTransformer, depth=3)
    assert mp.match_paths(model, "blocks.*.attn.core") == [f"blocks.{i}.attn.core" for i in range(3)]
    assert mp.match_paths(model, "blocks.-1") == ["blocks.2"]
    assert mp.match_paths(model, "blocks.-3.mlp.w1") == ["blocks.0.mlp.w1"]
    assert mp.match_paths(model, "blocks.-4") == []
    assert mp.match_paths(model, "blocks.*.mlp.w*") == []  # '*' is a whole segment, not a glob


def test_plan_errors_are_clear():
    model = build(ToyTransformer)
    with pytest.raises(
        ValueError, match=r"plan pattern 'blocks\.\*\.atn\.core' matches no sub-cell of ToyTransformer"
    ):
        mp.parallelize(model, {"blocks.*.atn.core": mp.UlyssesAttention()})
    with pytest.raises(TypeError, match="is not a ParallelStyle"):
        mp.parallelize(model, {"blocks.0": "shard"})


def test_styles_are_identities_on_one_process():
    ref, par = build(ToyTransformer), build(ToyTransformer)
    names = [p.name for p in par.get_parameters()]
    plan = {
        "blocks.0": mp.SequenceShardInput(),
        "blocks.-1": mp.SequenceGatherOutput(),
        "blocks.*.attn.core": [mp.ContextParallelAttention(), mp.UlyssesAttention()],
        "blocks.*.mlp.w1": mp.ColwiseParallel(),
        "blocks.*.mlp.w2": mp.RowwiseParallel(),
    }
    mp.parallelize(par, plan)
    assert [p.name for p in par.get_parameters()] == names
    x = ms.Tensor(np.random.default_rng(0).normal(size=(2, 8, 6)).astype(np.float32))
    text = ms.Tensor(np.ones((2, 3, 5), np.float32))
    mask = ms.Tensor(np.ones((2, 1, 1, 3), np.float32))
    np.testing.assert_array_equal(par(x, text, mask).asnumpy(), ref(x, text, mask).asnumpy())


class _Scale(nn.Cell):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def construct(self, *args):
        return (args[0] * self.factor, *args[1:])


class _Shift(nn.Cell):
    def construct(self, out):
        return out + 100.0


class _Affine(nn.Cell):
    def __init__(self):
        super().__init__()
        self.lin = mint.nn.Linear(4, 4)

    def construct(self, x, y):
        return self.lin(x) + y


@pytest.mark.parametrize("jit", [False, True])
def test_wrap_forward_runs_pre_and_post_around_the_cell(jit):
    cell = _Affine()
    w, b = cell.lin.weight.asnumpy().copy(), cell.lin.bias.asnumpy().copy()
    names = [p.name for p in cell.get_parameters()]
    mp.wrap_forward(cell, pre=_Scale(2.0))
    mp.wrap_forward(cell, pre=_Scale(3.0), post=_Shift())  # outermost: scales first, shifts last
    assert [p.name for p in cell.get_parameters()] == names
    x, y = np.ones((2, 4), np.float32), np.full((2, 4), 0.5, np.float32)
    expected = (6 * x) @ w.T + b + y + 100.0

    def run(a, c):
        return cell(a, c)

    fn = ms.jit(run) if jit else run
    np.testing.assert_allclose(fn(ms.Tensor(x), ms.Tensor(y)).asnumpy(), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# Sharding math and checkpoints
# ---------------------------------------------------------------------------------------------------------


def test_flat_chunks_pad_and_reassemble():
    array = np.arange(10, dtype=np.float32).reshape(2, 5)
    chunks = [flat_chunk(array, 4, i) for i in range(4)]
    assert [c.size for c in chunks] == [3, 3, 3, 3]
    np.testing.assert_array_equal(np.concatenate(chunks)[:10].reshape(2, 5), array)
    assert np.all(chunks[3][1:] == 0)
    assert tensor_chunk(array.T, 0, 5, 4).shape == (1, 2)
    with pytest.raises(ValueError, match="not divisible"):
        tensor_chunk(array, 1, 2, 0)


def test_shard_metadata_round_trips_on_one_process():
    ctx = mp.get_parallel_context()
    p = ms.Parameter(ms.Tensor(np.arange(6, dtype=np.float32)), name="p")
    p.mg_tensor_shard = TensorShard(dim=0, axes=("tp",), full_shape=(6,))
    p.mg_flat_shard = FlatShard(axes=("dp",), shape=(6,))
    full = np.arange(6, dtype=np.float32) * 2
    np.testing.assert_array_equal(shard_like(full, p, ctx), full)
    np.testing.assert_array_equal(unshard(p.value(), p, ctx), np.arange(6, dtype=np.float32))


def test_full_state_snapshot_does_not_follow_training():
    model = build(MLPStack, dim=4, hidden=6)
    snapshot = mp.gather_full_state(model)
    before = {k: v.copy() for k, v in snapshot.items()}
    opt = AdamW(model.trainable_params(), lr=0.1)
    grads = ms.grad(lambda x: model(x).sum(), None, model.trainable_params())(
        ms.Tensor(np.ones((1, 2, 4), np.float32))
    )
    opt(grads)
    for key, value in before.items():
        np.testing.assert_array_equal(snapshot[key], value, err_msg=key)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_full_checkpoint_save_and_load(tmp_path, suffix):
    source, target = build(MLPStack, seed=1), build(MLPStack, seed=2)
    path = tmp_path / f"model{suffix}"
    state = mp.save_full_checkpoint(source, path)
    assert path.is_file() and not list(tmp_path.glob("*.tmp*"))
    assert mp.load_full_checkpoint(target, path) == []
    for p in target.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), state[p.name])


def test_full_state_errors_name_the_keys(tmp_path):
    model = build(MLPStack)
    state = mp.gather_full_state(model)
    broken = dict(state)
    broken.pop("head.bias")
    broken["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(
        ValueError, match=r"missing keys \['head\.bias'\], unexpected keys \['extra\.weight'\]"
    ):
        mp.load_full_state(model, broken)
    assert mp.load_full_state(model, {k: v for k, v in state.items() if k != "head.bias"}, strict=False) == [
        "head.bias"
    ]
    bad_shape = dict(state, **{"head.bias": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"head\.bias has shape \(3,\), the model expects \(8,\)"):
        mp.load_full_state(model, bad_shape)
    with pytest.raises(ValueError, match=r"expected a \.safetensors or \.ckpt file name"):
        mp.save_full_checkpoint(model, tmp_path / "model.bin")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mp.load_full_checkpoint(model, tmp_path / "missing.safetensors")


# ---------------------------------------------------------------------------------------------------------
# Gradients and ZeRO at world size 1
# ---------------------------------------------------------------------------------------------------------


def test_global_norm_and_clipping():
    grads = (ms.Tensor(np.array([3.0, 0.0], np.float32)), ms.Tensor(np.array([[4.0]], np.float32)))
    norm = mp.GlobalNorm([None, None])(grads)
    assert float(norm.asnumpy()) == pytest.approx(5.0)
    clipped = mp.clip_by_global_norm(grads, 1.0, norm)
    assert float(mp.GlobalNorm([None, None])(clipped).asnumpy()) == pytest.approx(1.0, rel=1e-5)
    kept = mp.clip_by_global_norm(grads, 10.0, norm)
    np.testing.assert_allclose(kept[0].asnumpy(), grads[0].asnumpy())


def _adamw(params):
    return AdamW(params, lr=0.05, weight_decay=0.1)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_zero_on_one_process_equals_the_plain_optimizer(stage):
    ref, model = build(MLPStack, dim=5, hidden=7), build(MLPStack, dim=5, hidden=7)
    names = [p.name for p in model.get_parameters()]
    ref_opt = _adamw(ref.trainable_params())
    zero = mp.ZeroOptimizer(model, _adamw, stage=stage)
    assert [p.name for p in model.get_parameters()] == names
    x = ms.Tensor(np.random.default_rng(3).normal(size=(2, 3, 5)).astype(np.float32))
    for _ in range(2):
        ref_opt(ms.grad(lambda a: ref(a).sum(), None, ref.trainable_params())(x))
        zero(ms.grad(lambda a: model(a).sum(), None, zero.params)(x))
    for p, q in zip(model.get_parameters(), ref.get_parameters(), strict=True):
        np.testing.assert_allclose(p.asnumpy(), q.asnumpy(), rtol=1e-6, atol=1e-7, err_msg=p.name)
    report = zero.memory_report()
    assert report["params"] == report["grads"] == sum(p.nbytes for p in ref.get_parameters())


def test_zero_rejects_bad_arguments():
    model = build(MLPStack)
    with pytest.raises(ValueError, match="stage must be 0, 1, 2 or 3"):
        mp.ZeroOptimizer(model, _adamw, stage=4)
    with pytest.raises(ValueError, match="over exactly the parameters it is given"):
        mp.ZeroOptimizer(model, lambda params: _adamw(params[:2]), stage=2)


def test_grad_reducer_is_identity_on_one_process():
    model = build(MLPStack)
    grads = tuple(ms.Tensor(np.full(p.shape, 0.5, np.float32)) for p in model.trainable_params())
    reduced = mp.GradReducer(model.trainable_params())(grads)
    for g, r in zip(grads, reduced, strict=True):
        np.testing.assert_array_equal(g.asnumpy(), r.asnumpy())


# ---------------------------------------------------------------------------------------------------------
# Harness pieces that need no launch
# ---------------------------------------------------------------------------------------------------------


def test_run_cases_stops_after_the_first_failure():
    def boom():
        raise RuntimeError("broken case")

    results = run_cases({"a": lambda: 1, "b": boom, "c": lambda: 3})
    assert results["a"]["status"] == "ok" and results["a"]["value"] == 1
    assert results["b"]["status"] == "error" and "broken case" in results["b"]["traceback"]
    assert results["c"]["status"] == "skipped"
    per_rank = CaseResults([results, results])
    assert per_rank["a"] == [1, 1]
    with pytest.raises(CaseError, match="raised on rank 0"):
        per_rank["b"]
    with pytest.raises(CaseError, match="skipped"):
        per_rank["c"]
    with pytest.raises(KeyError, match="no case 'd'"):
        per_rank["d"]


def test_run_cases_filter(monkeypatch):
    monkeypatch.setenv("MG_TEST_CASES", "z*")
    assert list(run_cases({"a": lambda: 1, "zz": lambda: 2})) == ["zz"]


def test_resolve_target_forms(tmp_path):
    assert resolve_target("mg_parallel.groups:init_parallel") is mp.init_parallel
    module = tmp_path / "some_cases.py"
    module.write_text("def f():\n    return 41 + 1\n")
    assert resolve_target(f"{module}:f")() == 42
    with pytest.raises(ValueError, match="must look like"):
        resolve_target("no_colon_here")


def test_run_distributed_validates_nprocs():
    with pytest.raises(ValueError, match="nprocs must be >= 1"):
        mp.testing.run_distributed("x:y", 0)


def test_context_requires_init_in_distributed_jobs(monkeypatch):
    from mindspore.communication import GlobalComm

    monkeypatch.setattr(GlobalComm, "INITED", True)
    with pytest.raises(RuntimeError, match=r"call mg_parallel\.init_parallel"):
        mp.get_parallel_context()


def test_parallel_context_checks_world_size():
    with pytest.raises(ValueError, match="does not equal the world size 2"):
        ParallelContext(layout=ParallelLayout(sp=4), rank_id=0, world_size=2)
