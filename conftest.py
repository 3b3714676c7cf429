"""Repository-wide pytest hooks shared by every package's tests (loaded because the repo root is pytest's rootdir)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest
from packaging.requirements import Requirement


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked `ascend` unless MG_TEST_ASCEND=1 says an Ascend NPU is present."""
    if os.environ.get("MG_TEST_ASCEND") == "1":
        return
    skip = pytest.mark.skip(reason="needs an Ascend NPU (set MG_TEST_ASCEND=1 to run)")
    for item in items:
        if "ascend" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """An env whose package has no tests yet (pytest exit 5) is not a failure; the summary line still prints."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK


def _runtime_closure(dist: str) -> set[str]:
    """Names of the distributions reachable from `dist` through installed runtime (non-extra) requirements."""
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for text in requirements:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _modules_loaded_by_import(module: str) -> set[str]:
    """Top-level module names present in a fresh interpreter after `import module`."""
    code = f"import sys, json, {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


@pytest.fixture
def check_standalone():
    """Assert a distribution imports and installs without the given modules/distributions.

    Call as `check_standalone(dist, forbidden=[...], siblings=[...])`: the installed version must match
    the module's `__version__`, importing it in a fresh interpreter must not load any forbidden module, the
    runtime requirement closure must contain no forbidden distribution and must contain the declared siblings.
    """

    def check(dist: str, forbidden: list[str], siblings: list[str] = ()) -> None:
        module = dist.replace("-", "_")
        version = importlib.import_module(module).__version__
        assert version == importlib.metadata.version(dist)
        loaded = _modules_loaded_by_import(module)
        assert not loaded & set(forbidden), f"importing {module} loaded {sorted(loaded & set(forbidden))}"
        closure = _runtime_closure(dist)
        forbidden_dists = {name.replace("_", "-") for name in forbidden}
        assert not closure & forbidden_dists, f"{dist} depends on {sorted(closure & forbidden_dists)}"
        missing = set(siblings) - closure
        assert not missing, f"{dist} does not declare {sorted(missing)}"

    return check
