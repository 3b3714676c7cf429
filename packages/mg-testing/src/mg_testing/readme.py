"""Run the commands a README shows, exactly as written, so that documentation and code cannot drift apart.

Convention: every fenced ```bash block of a README is a list of commands meant to run as shown (a command may
continue over lines ending in `\\`; `#` lines are comments). Examples that need other hardware or a user's own
files are written as ```text blocks (templates), which are not run. `shell_blocks(readme)` finds the bash
blocks; `run_block` runs one in a working directory with bash, stopping at the first failing command; a test
then asserts on its output and files. `check_all_blocks_run` makes a test fail when a README gains a block no
test runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class ShellBlock:
    """One ```bash block: where it is and its commands (continuation lines joined)."""

    readme: Path
    line: int  # 1-based line of the opening fence
    commands: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.readme}:{self.line}"

    @property
    def text(self) -> str:
        return "\n".join(self.commands)


def shell_blocks(readme: str | os.PathLike) -> list[ShellBlock]:
    """The ```bash blocks of `readme`, in order."""
    readme = Path(readme)
    blocks: list[ShellBlock] = []
    language, start, body = None, 0, []
    for number, line in enumerate(readme.read_text(encoding="utf-8").splitlines(), start=1):
        fence = _FENCE.match(line.strip())
        if fence and language is None:
            language, start, body = fence.group(1) or "", number, []
        elif fence and line.strip() == "```":
            if language in ("bash", "sh", "shell"):
                blocks.append(ShellBlock(readme, start, tuple(_commands(body))))
            language = None
        elif language is not None:
            body.append(line)
    return blocks


def _commands(lines: Sequence[str]) -> list[str]:
    commands, pending = [], ""
    for raw in lines:
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        commands.append((pending + line.strip()) if pending else line.strip())
        pending = ""
    if pending:
        commands.append(pending.strip())
    return commands


def command_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a README's reader has: this interpreter's `bin` first on PATH (its console scripts,
    msrun, and the `python` that msrun starts), plus `extra`."""
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("GLOG_v", "3")
    env.update(extra or {})
    return env


def run_command(
    command: str,
    cwd: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    timeout: float = 900.0,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run one command with bash in `cwd` (optionally behind `prefix`, e.g. a simulated host's `ip netns
    exec`); raises AssertionError with the output's tail when it fails."""
    Path(cwd).mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [*prefix, "bash", "-c", command],
        cwd=cwd,
        env=dict(env) if env is not None else command_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"README command failed with exit code {done.returncode}:\n  {command}\n"
            f"--- stdout (tail):\n{done.stdout[-3000:]}\n--- stderr (tail):\n{done.stderr[-3000:]}"
        )
    return done


def run_block(
    block: ShellBlock,
    cwd: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    timeout: float = 900.0,
) -> list[subprocess.CompletedProcess]:
    """Run every command of `block` in order in `cwd`; the first failure raises naming the README line."""
    results = []
    for command in block.commands:
        try:
            results.append(run_command(command, cwd, env, timeout))
        except AssertionError as exc:
            raise AssertionError(f"{block.where}: {exc}") from None
    return results


def check_all_blocks_run(
    readme: str | os.PathLike, ran: Sequence[ShellBlock], about: Callable[[ShellBlock], bool] = lambda b: True
) -> None:
    """Fail when `readme` holds a bash block selected by `about` (e.g. the launch commands) that is not among
    `ran`: a new command nobody runs."""
    missing = [block for block in shell_blocks(readme) if about(block) and block not in ran]
    if missing:
        listing = "\n".join(f"  {b.where}: {b.commands[0] if b.commands else '(empty)'}" for b in missing)
        raise AssertionError(
            f"README bash blocks that no test runs (run them in a test, or show them as ```text templates):\n"
            f"{listing}"
        )
