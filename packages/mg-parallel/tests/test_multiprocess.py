"""Multi-process tests: real msrun launches on CPU (mccl over loopback), N=2 per feature and N=4 combined.

Each module-scoped fixture is one launch running many cases (a launch costs 15-25 s before any case runs);
every test asserts on its own case: parallel results against the single-process reference computed in the
same worker, fp32, rtol = atol = 1e-5 unless noted. Collectives are checked against numpy.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from mg_parallel.testing import CaseResults, DistributedRunError, run_distributed

pytestmark = pytest.mark.multiprocess

CASES = Path(__file__).with_name("mgp_cases.py")
TIMEOUT = 1200.0  # generous: the CI machine is shared; a hang still ends in a failure with logs
RTOL = ATOL = 1e-5


def _launch(suite: str, nprocs: int, *args) -> CaseResults:
    start = time.perf_counter()
    results = CaseResults(run_distributed(f"{CASES}:{suite}", nprocs, args=args, timeout=TIMEOUT))
    slowest = sorted(results.timings().items(), key=lambda kv: -kv[1])[:5]
    print(f"\n{suite} on {nprocs} ranks: {time.perf_counter() - start:.1f} s; slowest cases {slowest}")
    return results


@pytest.fixture(scope="module")
def two_core(tmp_path_factory) -> CaseResults:
    return _launch("suite_two_core", 2, str(tmp_path_factory.mktemp("two_core")))


@pytest.fixture(scope="module")
def two_model(tmp_path_factory) -> CaseResults:
    return _launch("suite_two_model", 2, str(tmp_path_factory.mktemp("two_model")))


@pytest.fixture(scope="module")
def four() -> CaseResults:
    return _launch("suite_four", 4)


def assert_pair(pair, what: str, rtol: float = RTOL, atol: float = ATOL) -> None:
    got, want = pair
    if isinstance(want, dict):
        assert set(got) == set(want), f"{what}: keys differ: {sorted(set(got) ^ set(want))}"
        for key in want:
            assert_pair((got[key], want[key]), f"{what}[{key}]", rtol, atol)
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


def assert_exact(pair, what: str) -> None:
    got, want = pair
    if isinstance(want, dict):
        assert set(got) == set(want), f"{what}: keys differ: {sorted(set(got) ^ set(want))}"
        for key in want:
            assert_exact((got[key], want[key]), f"{what}[{key}]")
        return
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert np.array_equal(got, want), f"{what}: not bit-equal (max diff {np.max(np.abs(got - want))})"


def assert_model_case(per_rank: list[dict], name: str) -> None:
    """Forward output, input gradient and every (reduced, unsharded) parameter gradient vs single process."""
    for rank, value in enumerate(per_rank):
        grads = [k for k in value if k.startswith("grad:")]
        assert grads, f"{name}: no parameter gradients returned"
        for key, pair in value.items():
            if isinstance(pair, tuple):
                assert_pair(pair, f"{name} rank {rank} {key}")


# ---------------------------------------------------------------------------------------------------------
# Collectives (N=2 world group, N=4 subgroups)
# ---------------------------------------------------------------------------------------------------------


def test_collectives_match_numpy_forward_and_adjoint(two_core):
    for rank, value in enumerate(two_core["collectives_world"]):
        for name, entry in value.items():
            if name in ("hash_placement", "dtypes", "native_available"):
                continue
            assert_pair(entry["out"], f"rank {rank} {name} forward", 1e-6, 1e-6)
            assert_pair(entry["grad"], f"rank {rank} {name} backward", 1e-6, 1e-6)


def test_native_and_emulated_collectives_are_bit_equal(two_core):
    """On CPU AllGather and Broadcast exist natively in the world group: the AllReduce equivalents match."""
    for value in two_core["collectives_world"]:
        for dim in (0, 1, 2):
            native, emulated = value[f"all_gather_native_{dim}"], value[f"all_gather_emulated_{dim}"]
            assert np.array_equal(native["out"][0], emulated["out"][0])
            np.testing.assert_allclose(native["grad"][0], emulated["grad"][0], rtol=1e-6, atol=1e-6)
        for root in (0, 1):
            native, emulated = value[f"broadcast_native_{root}"], value[f"broadcast_emulated_{root}"]
            assert np.array_equal(native["out"][0], emulated["out"][0])
            assert np.array_equal(native["grad"][0], emulated["grad"][0])


def test_cpu_native_collective_table(two_core):
    expected = {
        "all_reduce": True,
        "all_gather": True,
        "broadcast": True,
        "reduce_scatter": False,
        "all_to_all": False,
    }
    assert two_core["collectives_world"][0]["native_available"] == expected


def test_forcing_an_unavailable_native_op_fails_clearly(two_core):
    messages = two_core["native_errors"][0]
    assert "native reduce_scatter is not available on CPU" in messages["reduce_scatter"]
    assert "native all_to_all is not available on CPU" in messages["all_to_all"]


def test_ulysses_all_to_all_hash_placement_and_round_trip(two_core, four):
    for value in two_core["collectives_world"]:
        assert_exact(value["hash_placement"]["heads"], "world: element landed on the wrong rank/position")
        assert_exact(value["hash_placement"]["round_trip"], "world: seq->heads->seq is not the identity")
    for rank, value in enumerate(four["collectives_in_groups"]):
        for key in ("sp_hash", "dp_hash", "world_hash"):
            assert_exact(value[key]["heads"], f"rank {rank} {key}")
            assert_exact(value[key]["round_trip"], f"rank {rank} {key} round trip")


def test_integer_and_bool_collectives_are_exact(two_core, four):
    for value in two_core["collectives_world"]:
        for key, pair in value["dtypes"].items():
            assert_exact(pair, f"world {key}")
    for value in four["collectives_in_groups"]:
        for axis in ("sp", "dp"):
            for key, pair in value[f"{axis}_dtypes"].items():
                assert_exact(pair, f"{axis} {key}")


def test_subgroup_collectives_at_four_ranks(four):
    for rank, value in enumerate(four["collectives_in_groups"]):
        assert value["coords"] == {"dp": rank // 2, "cp": 0, "sp": rank % 2, "tp": 0}
        assert value["sp_ranks"] == (rank - rank % 2, rank - rank % 2 + 1)
        assert value["dp_ranks"] == (rank % 2, rank % 2 + 2)
        for axis in ("sp", "dp"):
            for op in ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "all_to_all"):
                entry = value[f"{axis}_{op}"]
                assert_pair(entry["out"], f"rank {rank} {axis} {op} forward", 1e-6, 1e-6)
                assert_pair(entry["grad"], f"rank {rank} {axis} {op} backward", 1e-6, 1e-6)


def test_broadcast_syncs_noise_within_model_parallel_group(two_core, four):
    for results, name in ((two_core, "broadcast_noise"), (four, "broadcast_noise_dp2sp2")):
        for value in results[name]:
            assert_exact(value["noise"], name)
            assert_exact(value["t"], name)


# ---------------------------------------------------------------------------------------------------------
# Data parallel and ZeRO
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["data_parallel", "data_parallel_jit"])
def test_data_parallel_gradients_match_single_process(two_core, case):
    assert_model_case(two_core[case], case)


ZERO_CASES = [
    "zero0_adamw",
    "zero1_adamw",
    "zero2_adamw",
    "zero3_adamw",
    "zero2_adamweightdecay",
    "zero3_adamweightdecay",
    "zero2_jit",
    "zero3_jit_grad",
    "zero3_jit",
]


@pytest.mark.parametrize("case", ZERO_CASES)
def test_zero_training_matches_single_process(two_core, case):
    """3 clipped optimizer steps on 2 ranks == the same optimizer on the global batch in one process."""
    for rank, value in enumerate(two_core[case]):
        assert_pair(value["params"], f"{case} rank {rank} parameters")
        assert_pair(value["optimizer_state"], f"{case} rank {rank} optimizer state (gathered)")
        for step, (got, want) in enumerate(value["norms"]):
            assert math.isclose(got, want, rel_tol=1e-5), (
                f"{case} step {step}: global grad norm {got} != {want}"
            )
            assert want > 0.5, "the clip threshold must be active for the test to cover clipping"
        for step, (got, want) in enumerate(value["losses"]):
            assert math.isclose(got, want, rel_tol=1e-5, abs_tol=1e-6), (
                f"{case} step {step}: loss {got} != {want}"
            )


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_full_state_round_trip(two_core, stage):
    """Full model + optimizer state gathered from ZeRO ranks reloads and resumes bit-identically."""
    for value in two_core[f"zero{stage}_roundtrip"]:
        assert_exact(value["loaded"], f"stage {stage} reloaded parameters")
        assert_exact(value["resumed"], f"stage {stage} parameters after one more step")


def _expected_memory(numels: list[int], world: int, stage: int) -> dict[str, int]:
    full = sum(numels) * 4
    chunk = sum(-(-m // world) for m in numels) * 4
    sharded = world > 1
    return {
        "params": chunk if stage == 3 and sharded else full,
        "grads": chunk if stage >= 2 and sharded else full,
        # AdamW keeps exp_avg, exp_avg_sq and max_exp_avg_sq per element, plus an int32 step counter
        "optimizer_state": 3 * (chunk if stage >= 1 and sharded else full) + 4,
        "shard_copies": chunk if stage in (1, 2) and sharded else 0,
    }


def _cases_module():
    """mgp_cases.py loaded by path, as the msrun workers load it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mgp_cases", CASES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zero_memory_per_rank_scales_as_one_over_n(two_core, four):
    one = _cases_module().zero_memory()  # world size 1, in this process
    rows = {1: one, 2: two_core["zero_memory"][0], 4: four["zero_memory"][0]}
    print("\nZeRO bytes per rank (MLPStack dim 64, hidden 256, depth 2; AdamW):")
    print(f"{'stage':>5} {'ranks':>5} {'params':>10} {'grads':>10} {'optim':>10} {'copies':>10}  vs 1 rank")
    for stage in (0, 1, 2, 3):
        base = rows[1]["report"][stage]
        for world, row in rows.items():
            got = row["report"][stage]
            assert got == _expected_memory(row["numels"], world, stage), (
                f"stage {stage}, {world} ranks: {got}"
            )
            ratios = " ".join(f"{got[k] / base[k]:.2f}" for k in ("params", "grads", "optimizer_state"))
            print(
                f"{stage:>5} {world:>5} {got['params']:>10} {got['grads']:>10} {got['optimizer_state']:>10} "
                f"{got['shard_copies']:>10}  {ratios}"
            )
    assert rows[4]["report"][3]["optimizer_state"] < rows[1]["report"][3]["optimizer_state"] / 3.9


# ---------------------------------------------------------------------------------------------------------
# Sequence and tensor parallel
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "ulysses",
        "ulysses_jit",
        "ulysses_full_mask",
        "ulysses_local_mask",
        "context_parallel",
        "context_parallel_jit",
        "context_parallel_mask",
        "tp_plain",
        "tp_gather",
        "tp_sequence",
        "tp_sequence_jit",
    ],
)
def test_parallel_model_matches_single_process(two_model, case):
    assert_model_case(two_model[case], case)


def test_tensor_parallel_shards_weights(two_model):
    shapes = two_model["tp_plain"][0]["local_shapes"]
    assert shapes["blocks.0.mlp.w1.weight"] == (6, 8)  # column-parallel: out 12 / 2
    assert shapes["blocks.0.mlp.w3.bias"] == (6,)
    assert shapes["blocks.0.mlp.w2.weight"] == (8, 6)  # row-parallel: in 12 / 2
    assert shapes["blocks.0.mlp.w2.bias"] == (8,)  # replicated
    assert shapes["head.weight"] == (8, 8)  # untouched


def test_sequence_parallel_errors_are_clear(two_model):
    messages = two_model["sequence_errors"][0]
    assert "1 attention heads are not divisible by the sequence-parallel degree 2" in messages["heads"]
    assert (
        "sequence length 7" in messages["seq"] and "not divisible by the parallel degree 2" in messages["seq"]
    )


def test_tensor_parallel_checkpoint_round_trip_is_exact(two_model):
    values = two_model["tp_checkpoint"]
    for value in values:
        assert_pair(value["out"], "forward after loading the plain checkpoint")
        assert_exact(value["gathered"], "gathered state vs the plain model")
    assert_exact(values[0]["file"], "checkpoint written by rank 0")


# ---------------------------------------------------------------------------------------------------------
# Combined layouts on 4 ranks
# ---------------------------------------------------------------------------------------------------------


def test_dp2_sp2_ulysses_zero2_training(four):
    for rank, value in enumerate(four["dp2_sp2_zero2"]):
        assert_pair(value["params"], f"rank {rank} parameters after 2 steps")
        for got, want in value["norms"]:
            assert math.isclose(got, want, rel_tol=1e-5)


def test_cp2_sp2_ulysses_around_context_parallel(four):
    assert_model_case(four["cp2_sp2"], "cp2_sp2")


@pytest.mark.parametrize("stage", [1, 3])
def test_dp2_tp2_sequence_parallel_with_zero(four, stage):
    for rank, value in enumerate(four[f"dp2_tp2_zero{stage}"]):
        assert_pair(value["params"], f"rank {rank} parameters")
        assert_pair(value["optimizer_state"], f"rank {rank} optimizer state")
        for got, want in value["norms"]:
            assert math.isclose(got, want, rel_tol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# The harness itself
# ---------------------------------------------------------------------------------------------------------


def test_harness_reports_a_failing_rank_with_its_traceback():
    with pytest.raises(DistributedRunError) as info:
        run_distributed(f"{CASES}:raise_on_rank_one", 2, timeout=300)
    message = str(info.value)
    assert "rank 1 raised" in message
    assert "RuntimeError: deliberate failure on rank 1" in message
    assert "worker_1.log" in message


def test_harness_timeout_kills_every_worker():
    with pytest.raises(DistributedRunError) as info:
        run_distributed(f"{CASES}:sleep_forever", 2, timeout=8, keep_dir=True)
    message = str(info.value)
    assert "timed out after 8 s" in message
    run_dir = Path(message.split("run directory: ")[1].splitlines()[0])
    pids = [int(p.read_text()) for p in run_dir.glob("pid_*")]
    assert pids, "workers should have recorded their pids"
    time.sleep(1)
    alive = [pid for pid in pids if os.path.exists(f"/proc/{pid}") and "Z" not in _state(pid)]
    shutil.rmtree(run_dir, ignore_errors=True)
    assert not alive, f"workers {alive} survived the timeout"


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"
