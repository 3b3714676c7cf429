"""Entry script that `msrun` starts in every worker (and the scheduler) for `mg_parallel.testing.run_distributed`.

Usage (internal): `python _worker.py RUN_DIR`. RUN_DIR holds `payload.pkl` (target, args, kwargs); each worker
writes `pid_<rank>`, then either `result_<rank>.pkl` or `error_<rank>.txt`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import sys
import traceback
from pathlib import Path

from mg_parallel._atomic import atomic_file


def resolve_target(target: str):
    """Return the function named by `"package.module:function"` or `"/path/to/file.py:function"`."""
    module_name, sep, func_name = target.rpartition(":")
    if not sep or not module_name or not func_name:
        raise ValueError(
            f"target {target!r} must look like 'package.module:function' or 'path/file.py:function'"
        )
    if module_name.endswith(".py"):
        path = Path(module_name).resolve()
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))  # let the file import its neighbours
        spec = importlib.util.spec_from_file_location(f"mg_dist_target_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    return getattr(module, func_name)


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def main(run_dir: str) -> int:
    run = Path(run_dir)
    role = os.environ.get("MS_ROLE", "MS_WORKER")
    label = os.environ.get("RANK_ID", str(os.getpid()))
    if role == "MS_WORKER":
        _write_atomic(run / f"pid_{label}", str(os.getpid()).encode())
    try:
        payload = pickle.loads((run / "payload.pkl").read_bytes())
        from mindspore.communication import get_rank, init

        init()  # the scheduler process serves the cluster inside init() and does not return here
        rank = get_rank()
        label = str(rank)
        func = resolve_target(payload["target"])
        result = func(*payload["args"], **payload["kwargs"])
        _write_atomic(run / f"result_{rank}.pkl", pickle.dumps(result))
    except BaseException:  # report everything, including SystemExit from the function under test
        text = traceback.format_exc()
        _write_atomic(run / f"error_{label}.txt", text.encode())
        print(text, file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)  # do not wait on collectives the other ranks may never join
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
