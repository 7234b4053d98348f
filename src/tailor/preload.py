"""The `tailor` command runs on mimalloc, preloaded, instead of glibc's malloc.

Why: with glibc's malloc a CPU training step either fragments the heap (freed blocks of mixed sizes it
cannot reuse: `make demo` peaked at 8.2-9.4 GB) or, handed back as allocator.py does, faults every
block of 1 MiB or more in afresh: 21.5 million page faults and 70 of 290 CPU seconds in the kernel over
16 SmolLM2-135M steps. mimalloc (Microsoft's allocator, from the cmeel-mimalloc wheel) reuses freed pages
by size class and returns idle ones to the kernel on its own: the same 16 steps ran at 183 tok/s against
111, 17 s in the kernel, at the same peak (BENCHMARKS.md). PyTorch's own CPU launcher
(`torch.backends.xeon.run_cpu`) and Intel's tuning guides preload jemalloc or tcmalloc for the same reason.

How: an allocator is chosen before the process starts (memory glibc handed out must go back to glibc),
so `entry()`, the console script, re-executes the interpreter once, before anything heavy is imported,
with the library first in LD_PRELOAD (`python -m tailor.cli` does the same). The new process puts
LD_PRELOAD back as it was, so the programs tailor starts (llama.cpp, a browser) inherit the user's
environment. `TAILOR_ALLOCATOR=system` keeps glibc's malloc (allocator.py's settings then apply); so does
a Python API caller, whose process tailor did not start. Linux only; elsewhere, or where the
library is missing or cannot be preloaded, tailor runs on the system allocator as before.
"""

from __future__ import annotations

import functools
import os
import sys

CHOICE = "TAILOR_ALLOCATOR"  # mimalloc (the default) or system
_DONE = "_TAILOR_PRELOADED"  # set for the re-executed process: the LD_PRELOAD to put back ("" for none)
LIBRARY = "cmeel.prefix/lib/libmimalloc.so.3"  # inside the cmeel-mimalloc wheel


def library() -> str | None:
    """mimalloc's shared library, where the cmeel-mimalloc wheel put it (None when not installed)."""
    from importlib import metadata

    try:
        path = str(metadata.distribution("cmeel-mimalloc").locate_file(LIBRARY))
    except metadata.PackageNotFoundError:
        return None
    # ld.so splits LD_PRELOAD at spaces and colons: such a path cannot be preloaded.
    return path if os.path.isfile(path) and not any(c in path for c in " :") else None


def wanted() -> bool:
    return sys.platform.startswith("linux") and os.environ.get(CHOICE, "mimalloc").strip().lower() != "system"


def preload() -> None:
    """Re-execute this process with mimalloc preloaded, once; in the re-executed one, put LD_PRELOAD back.
    Returns only where nothing is to be done (or the exec failed)."""
    if _DONE in os.environ:
        before = os.environ.pop(_DONE)
        if before:
            os.environ["LD_PRELOAD"] = before
        else:
            os.environ.pop("LD_PRELOAD", None)
        return
    if not wanted() or in_use():
        return
    path = library()
    argv, args = getattr(sys, "orig_argv", None), sys.argv[1:]
    # The interpreter's own command line must still be this command's: a process forked from another (the test
    # suite's fork server, which runs the command with runpy) would start that other program again.
    if path is None or not argv or not sys.executable or (args and argv[-len(args):] != args):
        return
    before = os.environ.get("LD_PRELOAD", "")
    env = dict(os.environ, LD_PRELOAD=f"{path} {before}".strip(), **{_DONE: before})
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError:  # run on as we are
        return


@functools.cache
def mimalloc():
    """The process's own symbols (ctypes) where it allocates with mimalloc (mi_version is among them), else None;
    the functions tailor calls have their C signatures set here, once."""
    import ctypes

    try:
        symbols = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(symbols, "mi_version"):
        return None
    symbols.mi_collect.argtypes, symbols.mi_collect.restype = [ctypes.c_bool], None
    symbols.mi_option_get.argtypes, symbols.mi_option_get.restype = [ctypes.c_int], ctypes.c_long
    symbols.mi_option_set.argtypes, symbols.mi_option_set.restype = [ctypes.c_int, ctypes.c_long], None
    return symbols


def in_use() -> bool:
    """Whether this process allocates with mimalloc."""
    return mimalloc() is not None


def name() -> str:
    """The allocator this process runs on, in the words the training line prints."""
    if not in_use():
        return "system malloc"
    v = mimalloc().mi_version()  # 30403 for 3.4.3 (212 for 2.1.2 in the 2.x series)
    major, minor, patch = (v // 10000, v // 100 % 100, v % 100) if v >= 10000 else (v // 100, v // 10 % 10, v % 10)
    return f"mimalloc {major}.{minor}.{patch}"
