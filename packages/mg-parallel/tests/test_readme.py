"""The README's launch commands run exactly as written: one process, two ranks on one node, and two hosts of
two ranks (on simulated hosts with the README's addresses); every layout prints the one-process final loss and
weight checksum."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from mg_parallel.testing import SimulatedHosts
from mg_testing.readme import check_all_blocks_run, command_env, run_block, shell_blocks

pytestmark = pytest.mark.multiprocess
README = Path(__file__).resolve().parents[1] / "README.md"
FINAL = re.compile(r"final loss (\S+) checksum (\S+)")


def _final(text: str) -> tuple[float, float]:
    found = FINAL.findall(text)
    assert found, text[-3000:]
    loss, checksum = found[-1]
    return float(loss), float(checksum)


def _launch_blocks() -> list:
    return [block for block in shell_blocks(README) if "mg_parallel.examples.mlp" in block.text]


def test_every_launch_command_of_the_readme_is_run_here():
    """Every bash block that launches a distributed job (msrun, or the example) is one of the two the tests below
    run; install, tox and benchmark commands are what CI and tools/bench_summary.py run."""
    launches = lambda block: any("msrun" in c or "mg_parallel.examples" in c for c in block.commands)  # noqa: E731
    check_all_blocks_run(README, _launch_blocks(), about=launches)


def test_one_process_and_two_ranks_on_one_node(tmp_path):
    single, two_ranks = run_block(_launch_blocks()[0], tmp_path)
    loss, checksum = _final(single.stdout)
    assert "world 1 (dp 1, tp 1)" in single.stdout
    assert "world 2 (dp 1, tp 2), ZeRO 2" in two_ranks.stdout
    got_loss, got_checksum = _final(two_ranks.stdout)
    assert got_loss == pytest.approx(loss, rel=1e-5) and got_checksum == pytest.approx(checksum, rel=1e-5)


@pytest.mark.skipif(SimulatedHosts.may_skip(), reason="multi-node test needs root and iproute2 (ip netns)")
def test_two_hosts_as_written(tmp_path):
    block = _launch_blocks()[1]
    address = re.search(r"--master_addr=(\S+)", block.commands[0]).group(1)
    reference = _final(run_block(_launch_blocks()[0], tmp_path / "one")[0].stdout)
    with SimulatedHosts(2, subnet=address.rsplit(".", 1)[0]) as hosts:
        assert hosts.addresses[0] == address  # the README's master is the first simulated host
        procs = [
            subprocess.Popen(
                [*hosts.prefix(node), "bash", "-c", command],
                cwd=tmp_path,
                env=command_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for node, command in enumerate(block.commands)
        ]
        outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    assert "world 4 (dp 2, tp 2), ZeRO 3" in outputs[0]
    loss, checksum = _final(outputs[0])
    assert loss == pytest.approx(reference[0], rel=1e-5) and checksum == pytest.approx(reference[1], rel=1e-5)
