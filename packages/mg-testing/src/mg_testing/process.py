"""Run a function in a fresh Python interpreter: for checks whose result depends on what ran before in the process."""

from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_CHILD = r"""
import importlib, importlib.util, pickle, sys, traceback

path, module_name, qualname, in_file, out_file = sys.argv[1:6]


def load():
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and spec.origin == path:
        return importlib.import_module(module_name)
    # A file that is not importable by name (e.g. a test module collected in pytest's importlib mode).
    spec = importlib.util.spec_from_file_location("_mg_testing_fresh_" + module_name.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


with open(in_file, "rb") as handle:
    args, kwargs = pickle.load(handle)
try:
    fn = load()
    for part in qualname.split("."):
        fn = getattr(fn, part)
    outcome = ("ok", fn(*args, **kwargs))
except BaseException as err:
    outcome = ("error", type(err).__name__, isinstance(err, AssertionError), str(err), traceback.format_exc())
with open(out_file, "wb") as handle:
    pickle.dump(outcome, handle)
sys.exit(0 if outcome[0] == "ok" else 1)
"""


def run_in_fresh_process(fn: Callable, *args: Any, timeout: float = 600.0, **kwargs: Any) -> Any:
    """Call `fn(*args, **kwargs)` in a new Python interpreter and return its result.

    Why: MindSpore keeps process-wide state (compiled graphs, PyNative's op and grad caches). A result can depend
    on what ran earlier in the same process: MindSpore 2.10 PyNative mis-differentiated a length-1 softmax after
    another softmax only in a process where no other backward had run, so a test suite that happened to run a
    video backward first never saw the bug. Running a check here gives it a clean process every time.

    `fn` must be a module-level function of a Python file (a test module works: it is loaded from its path when
    it cannot be imported by name; its module-level code runs again, but not conftest.py or fixtures). `args`,
    `kwargs` and the result travel by pickle. An AssertionError inside re-raises here as AssertionError with the
    same message; any other error, a crash or a timeout raises RuntimeError with the child's traceback or
    output. The child inherits the environment and working directory.
    """
    qualname = fn.__qualname__
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(f"{qualname}: run_in_fresh_process needs a module-level function (found by name)")
    path = inspect.getsourcefile(fn)
    if path is None:
        raise ValueError(f"{qualname}: no source file to load in a fresh process")
    with tempfile.TemporaryDirectory(prefix="mg-testing-") as tmp:
        in_file, out_file = Path(tmp) / "in.pkl", Path(tmp) / "out.pkl"
        in_file.write_bytes(pickle.dumps((args, kwargs)))
        command = [sys.executable, "-c", _CHILD, os.path.abspath(path), fn.__module__, qualname]
        try:
            result = subprocess.run(
                [*command, str(in_file), str(out_file)], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as err:
            raise RuntimeError(f"{qualname} did not finish within {timeout:g} s in a fresh process") from err
        if not out_file.exists():
            raise RuntimeError(
                f"{qualname} died in a fresh process (exit code {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-3000:]}"
            )
        outcome = pickle.loads(out_file.read_bytes())
    if outcome[0] == "ok":
        return outcome[1]
    _, type_name, is_assertion, message, trace = outcome
    if is_assertion:
        raise AssertionError(f"{message}\n(in a fresh process running {qualname})")
    raise RuntimeError(f"{qualname} raised {type_name} in a fresh process:\n{trace[-3000:]}")
