"""Run a Python function in N worker processes under `msrun` and collect what every rank returns.

This is the harness behind mg-parallel's multi-process tests, public so other packages can test their
distributed code the same way. It works on CPU (MindSpore's mccl backend over loopback) as well as on Ascend.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mg_parallel.testing.hosts import SimulatedHosts, run_on

WORKER_SCRIPT = Path(__file__).with_name("_worker.py")


class DistributedRunError(AssertionError):
    """A distributed run failed or timed out; the message carries the workers' tracebacks and log tails."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (a random high port, checked by binding it)."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port found on 127.0.0.1")


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<missing>"
    return "\n".join(text[-lines:])


def _children_of(pid: int) -> list[int]:
    """All descendant pids of `pid`, read from /proc (Linux)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _is_ours(pid: int, marker: str) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _kill_run(proc: subprocess.Popen, run_dir: Path) -> None:
    """Stop msrun and every process it started for this run (workers run in their own sessions)."""
    marker = str(run_dir)
    pids = set(_children_of(proc.pid))
    for pid_file in run_dir.glob("pid_*"):
        with contextlib.suppress(OSError, ValueError):
            pids.add(int(pid_file.read_text()))
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # msrun was started as the leader of its own session
    for pid in pids:
        if _is_ours(pid, marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # msrun starts each worker with setsid: pgid == pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _report(run_dir: Path, nprocs: int, headline: str, log_lines: int) -> str:
    parts = [headline, f"run directory: {run_dir}"]
    for rank in range(nprocs):
        err = run_dir / f"error_{rank}.txt"
        if err.exists():
            parts.append(f"--- rank {rank} raised:\n{err.read_text(errors='replace')}")
    for err in sorted(run_dir.glob("error_*.txt")):
        if not err.stem.split("_")[1].isdigit() or int(err.stem.split("_")[1]) >= nprocs:
            parts.append(f"--- {err.name}:\n{err.read_text(errors='replace')}")
    for log in sorted((run_dir / "logs").rglob("*.log")):
        parts.append(f"--- tail of {log.relative_to(run_dir)}:\n{_tail(log, log_lines)}")
    for out in sorted(run_dir.glob("msrun*.out")):
        parts.append(f"--- tail of {out.name}:\n{_tail(out, log_lines)}")
    return "\n".join(parts)


def run_distributed(
    target: str,
    nprocs: int,
    *,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    timeout: float = 300.0,
    cluster_timeout: int = 30,
    env: dict[str, str] | None = None,
    error_grace: float = 15.0,
    log_lines: int = 60,
    keep_dir: bool = False,
    hosts: SimulatedHosts | None = None,
) -> list[Any]:
    """Run `target(*args, **kwargs)` on `nprocs` ranks with msrun on this machine; return the results by rank.

    `target` is `"package.module:function"` or `"/path/to/file.py:function"`. Each worker calls
    `mindspore.communication.init()` before the function, so the function may use collectives and
    `mg_parallel.init_parallel` right away. Results must be picklable (numpy arrays, not MindSpore tensors).
    Raises DistributedRunError with every worker's traceback and log tail when a rank raises, a rank returns
    nothing, or the run exceeds `timeout` seconds (then msrun and all workers are killed).

    With `hosts` (a `SimulatedHosts` context), the job runs as a multi-node job: one msrun invocation per host
    (`--node_rank i`, `nprocs / hosts.count` local workers each), the first host's address as master.
    """
    if nprocs < 1:
        raise ValueError(f"nprocs must be >= 1, got {nprocs}")
    nodes = hosts.count if hosts is not None else 1
    if nprocs % nodes:
        raise ValueError(f"nprocs={nprocs} must divide evenly over {nodes} hosts")
    run_dir = Path(tempfile.mkdtemp(prefix="mg_dist_"))
    (run_dir / "payload.pkl").write_bytes(
        pickle.dumps({"target": target, "args": tuple(args), "kwargs": dict(kwargs or {})})
    )
    python_dir = os.path.dirname(sys.executable)
    child_env = dict(os.environ)
    child_env.update(env or {})
    # msrun starts workers with the literal command `python`: make it this interpreter.
    child_env["PATH"] = python_dir + os.pathsep + child_env.get("PATH", "")
    child_env.setdefault("GLOG_v", "3")
    port = free_port()
    procs = []
    for node in range(nodes):
        cmd = [
            sys.executable,
            "-m",
            "mindspore.parallel.cluster.run",
            f"--worker_num={nprocs}",
            f"--local_worker_num={nprocs // nodes}",
            f"--master_addr={hosts.addresses[0] if hosts is not None else '127.0.0.1'}",
            f"--master_port={port}",
            f"--log_dir={run_dir / 'logs'}" + (f"/node{node}" if nodes > 1 else ""),
            "--join=True",
            f"--cluster_time_out={cluster_timeout}",
            *([f"--node_rank={node}"] if nodes > 1 else []),
            str(WORKER_SCRIPT),
            str(run_dir),
        ]
        name = "msrun.out" if nodes == 1 else f"msrun_node{node}.out"
        with open(run_dir / name, "wb") as out:
            procs.append(  # cwd: MindSpore drops rank_*/ and *.ir debug files into the working directory
                subprocess.Popen(
                    run_on(hosts, node, cmd),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=child_env,
                    start_new_session=True,
                    cwd=run_dir,
                )
            )
    deadline = time.monotonic() + timeout
    error_seen_at = None
    failure = None
    try:
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if now > deadline:
                failure = f"distributed run of {target} on {nprocs} ranks timed out after {timeout:.0f} s"
                break
            if error_seen_at is None and any(run_dir.glob("error_*.txt")):
                error_seen_at = now
            if error_seen_at is not None and now - error_seen_at > error_grace:
                failure = f"a rank of {target} failed and the others did not stop within {error_grace:.0f} s"
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                _kill_run(p, run_dir)
    results: list[Any] = []
    if failure is None:
        missing = [r for r in range(nprocs) if not (run_dir / f"result_{r}.pkl").exists()]
        if any(run_dir.glob("error_*.txt")) or missing:
            failure = (
                f"distributed run of {target} on {nprocs} ranks failed "
                f"(msrun exit code {[p.returncode for p in procs]}; ranks without a result: {missing})"
            )
        else:
            results = [pickle.loads((run_dir / f"result_{r}.pkl").read_bytes()) for r in range(nprocs)]
    if failure is not None:
        message = _report(run_dir, nprocs, failure, log_lines)
        if not keep_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise DistributedRunError(message)
    if not keep_dir:
        shutil.rmtree(run_dir, ignore_errors=True)
    return results
