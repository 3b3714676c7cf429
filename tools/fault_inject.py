"""Run an mg command with one fault injected on one rank: the way to check that a failure ends a distributed job
(every rank exits non-zero within a bounded time, and the output names the rank that failed).

    python tools/fault_inject.py --rank 1 --at step --step 3 --fault kill -- -m mg_train train -c ...
    msrun --worker_num=2 ... python tools/fault_inject.py --rank 0 --at checkpoint --step 2 --fault raise -- \\
        -m mg_train train -c ...

Everything after `--` is what `python` would be given (`-m module args...` or `script.py args...`); the fault
happens in the process whose rank (msrun's RANK_ID, 0 without msrun) is `--rank`:

- `--at step --step N` (N >= 2): when optimizer step N starts (step N - 1 has been logged);
- `--at checkpoint --step N`: when the checkpoint of step N is being written (on rank 0, the writer);
- `--fault raise`: an OSError("injected fault: ...") is raised there, as a failed disk write would;
- `--fault kill`: the process sends itself SIGKILL there (no cleanup, no message: a lost host);
- `--fault hang`: the process sleeps there for an hour (a stuck rank: `train.step_timeout` must end it).

Nothing is patched in processes of other ranks, and nothing in the installed packages changes.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
import time


def _fire(fault: str, where: str) -> None:
    print(
        f"fault_inject: rank {os.environ.get('RANK_ID', '0')}: {fault} at {where}",
        file=sys.stderr,
        flush=True,
    )
    if fault == "raise":
        raise OSError(f"injected fault: {where}")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "hang":
        time.sleep(3600)


def install(at: str, step: int, fault: str) -> None:
    """Patch mg-train so that `fault` happens at `at` / `step` in this process."""
    if at == "checkpoint":
        from mg_train import checkpoint

        original = checkpoint.CheckpointManager.partial

        def partial(self, current_step):  # every rank asks for the step's folder before writing its pieces
            if current_step == step:
                _fire(fault, f"the checkpoint of step {step}")
            return original(self, current_step)

        checkpoint.CheckpointManager.partial = partial
    elif at == "step":
        from mg_train import progress

        original_update = progress.Progress.update

        def update(self, current_step, **metrics):
            result = original_update(self, current_step, **metrics)
            if current_step == step - 1 and "loss" in metrics:  # step N - 1 is done: step N starts
                _fire(fault, f"the start of step {step}")
            return result

        progress.Progress.update = update
    else:
        raise ValueError(f"--at must be step or checkpoint, got {at!r}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: fault_inject.py [options] -- -m module args... | script.py args...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=0, help="rank that fails (msrun's RANK_ID)")
    parser.add_argument("--at", choices=("step", "checkpoint"), default="step")
    parser.add_argument("--step", type=int, default=2, help="optimizer step at which it fails")
    parser.add_argument("--fault", choices=("raise", "kill", "hang"), default="raise")
    args = parser.parse_args(argv[:split])
    if args.at == "step" and args.step < 2:
        parser.error("--at step needs --step 2 or later (the fault fires once step N - 1 is logged)")
    target = argv[split + 1 :]
    if int(os.environ.get("RANK_ID", "0")) == args.rank:
        install(args.at, args.step, args.fault)
    if target[:1] == ["-m"]:
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = target
        runpy.run_path(target[0], run_name="__main__")


if __name__ == "__main__":
    main()
