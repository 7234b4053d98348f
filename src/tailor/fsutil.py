"""Atomic, durable writes: a reader sees the old file/folder or the new one, never half of one, and a
power cut after a write returns never loses it (files and the renames into their folder are fsynced).

Temporary names carry tailor's prefix and the writer's pid (`.NAME.tailor-tmp-PID-...`, and
`.NAME.tailor-old-PID-...` for a folder moved aside while its replacement is renamed in), so `recover`
can tell tailor's leftovers of a dead writer from anything else and never touches the rest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable

TMP = "tailor-tmp"
OLD = "tailor-old"
_LEFTOVER = re.compile(rf"^\.(?P<name>.+)\.(?P<kind>{TMP}|{OLD})-(?P<pid>\d+)-[^/]*$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: str | Path) -> None:
    """Make the renames into `folder` durable: a rename lives in the folder's own entry list."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> None:
    """A temporary file of its own beside `path`, then a rename: writers racing on one path never share it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{TMP}-{os.getpid()}-")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: str | Path) -> dict:
    """A run folder's JSON record (status, metrics, summaries), or {} when it is missing, unreadable or not an
    object: readers of run folders show what is there."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _fsync_tree(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        elif f.is_dir():
            fsync_dir(f)
    fsync_dir(folder)


def write_dir(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Build a folder in a temporary sibling, then swap it in: the old folder is renamed aside, the new one
    renamed in, and only then the old one deleted. A kill between the two renames leaves the old folder
    under its aside name, which `recover` renames back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path.parent, only=path.name)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{TMP}-{os.getpid()}-"))
    old = None
    try:
        tmp.chmod(0o777 & ~_umask())
        fill(tmp)
        _fsync_tree(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.{OLD}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        if old is not None and old.exists() and not path.exists():
            os.replace(old, path)  # failed between the renames: put the old folder back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def recover(folder: str | Path, only: str | None = None) -> list[str]:
    """Tidy what a killed tailor writer left in `folder` (for the entry `only`, or all): a folder moved
    aside whose replacement never arrived goes back under its name; other leftovers are deleted.
    Only names with tailor's prefix whose writer (pid) is dead are touched. Returns what was tidied."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    done = []
    for entry in sorted(folder.iterdir()):
        m = _LEFTOVER.match(entry.name)
        if not m or (only is not None and m["name"] != only) or pid_alive(int(m["pid"])):
            continue
        target = folder / m["name"]
        try:
            if m["kind"] == OLD and not target.exists():
                os.replace(entry, target)  # the kill came between the two renames: the old folder is still whole
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:  # another process (a second rank) tidied it first
            continue
        done.append(entry.name)
    if done:
        fsync_dir(folder)
    return done
