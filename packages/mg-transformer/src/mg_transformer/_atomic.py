"""Atomic writes: a file or a whole folder becomes visible complete or not at all, and stays once visible.

`atomic_file(path)` yields a temporary file in the target's folder; `atomic_dir(path)` a temporary folder beside
the target, so several files (a config and its weights) appear together. On success the data is fsynced, renamed
over the target and the parent folder fsynced; on any error the temporary is removed and the target is untouched.
Temporaries are named `.<name>.tmp-<host>-<pid>-*`, so leftovers of a killed writer can be recognised by their
host and pid: `remove_dead_temporaries(folder)` deletes those whose process no longer runs on this host.

Each mg package that writes files ships this same module (one copy per package, so that each installs alone);
mg-data's tests check that the copies are identical.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


_TEMPORARY = re.compile(r"^\..+\.tmp-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-")


def temp_prefix(path: Path) -> str:
    """Name prefix of this process's temporaries for `path`."""
    return f".{path.name}.tmp-{_host()}-{os.getpid()}-"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries in `folder` whose writer was this host's process that no longer runs (a writer
    killed mid-write); those of running processes and of other hosts stay. Returns the deleted paths."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        match = _TEMPORARY.match(entry.name)
        if not match or match["host"] != _host() or _running(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's or a folder's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix) to write; on success it replaces `path`.

    The file gets the usual permissions (0666 minus the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replaces: Collection[str] | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path` to fill; on success it takes the place of `path`.

    An existing `path` is swapped out in one step where the system allows it (Linux `renameat2` exchange;
    elsewhere two renames) and then deleted, so readers see the old folder or the new one, never a mix. With
    `replaces`, an existing `path` may hold only entries of those names (a model folder holds its own files):
    anything else raises FileExistsError before the block runs, so a folder of other data is never deleted.
    """
    path = Path(path)
    if replaces is not None and path.exists():
        if not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a folder")
        others = sorted(p.name for p in path.iterdir() if p.name not in replaces)
        if others:
            raise FileExistsError(
                f"{path} holds {others[:5]}, which this save would delete; save into a new or empty folder"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
        for entry in sorted(tmp.rglob("*"), reverse=True):  # files before the folders that hold them
            if entry.is_file() or entry.is_dir():
                fsync_path(entry)
        fsync_path(tmp)
        if path.exists() and _exchange(tmp, path):
            shutil.rmtree(tmp)  # now the old folder
        elif path.exists():
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(path), dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0
