"""A run's output folder: one writer at a time (`.lock`) and one run identity (`run.json`).

Two jobs writing one folder interleave metrics, overwrite `config.yaml` and prune each other's checkpoints; a new
run started where an older run left checkpoints could resume or prune them. So rank 0 of a job takes the folder's
lock before anything is written (a second job fails at once, naming the holder's host and pid; a lock whose
process no longer runs on this host is taken over), and the folder records the id of the run it holds: every
checkpoint's manifest carries it, and only the current run's checkpoints are listed, resumed and pruned. Starting
a fresh run (`train.resume: null`) in a folder that already holds a run fails unless `train.new_run_in_used_folder`
is set; the older run's checkpoints then stay untouched.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from mg_data.atomic import write_text
from mg_train.config.loader import ConfigError

LOCK = ".lock"
RUN_FILE = "run.json"


class FolderInUseError(ConfigError):
    """Another job holds the output folder's lock."""


def _running_here(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return True  # cannot tell: assume it runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.held = False

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK

    def acquire(self) -> None:
        """Take the folder for this process; FolderInUseError names the live holder."""
        self.path.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.lock_path.read_text())
                    host, pid = str(holder["host"]), int(holder["pid"])
                except (OSError, ValueError, KeyError, TypeError):
                    holder, host, pid = {}, "?", -1
                if pid > 0 and _running_here(host, pid):
                    raise FolderInUseError(
                        f"{self.path} is in use by pid {pid} on host {host} (since {holder.get('since', '?')}; "
                        f"its lock is {self.lock_path}): wait for that run to end, or use another train.output_dir"
                    ) from None
                self.lock_path.unlink(missing_ok=True)  # its writer is gone (killed): take over
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(me))
            self.held = True
            return
        raise FolderInUseError(f"{self.path}: could not take {self.lock_path}")

    def release(self) -> None:
        if self.held:
            self.lock_path.unlink(missing_ok=True)
            self.held = False

    def run_id(self) -> str | None:
        try:
            return str(json.loads((self.path / RUN_FILE).read_text())["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def start(self, resume: str | None, has_checkpoints: bool, new_run_allowed: bool) -> str:
        """(Rank 0, holding the lock) the id of the run this job continues or starts: the folder's own when
        resuming; a new one for a fresh run, refused in a folder that holds another run unless allowed."""
        current = self.run_id()
        if resume is not None and current is not None:
            return current
        if resume is None and (current is not None or has_checkpoints) and not new_run_allowed:
            raise ConfigError(
                f"train.resume=null but {self.path} already holds a run (run.json or checkpoints/): set "
                "train.resume=auto to continue it, use another train.output_dir, or set "
                "train.new_run_in_used_folder=true to start a new run beside it (its checkpoints are kept, "
                "never resumed or pruned)"
            )
        new = uuid.uuid4().hex[:12]
        write_text(
            self.path / RUN_FILE, json.dumps({"run_id": new, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        )
        return new
