"""Freed memory the process keeps for its next allocations, and oneDNN's cache of compiled products.

glibc's malloc serves large blocks (above an adaptive threshold of 128 KiB that rises to 32 MiB) with
fresh mmap'd pages and returns them to the kernel on free, so blocks of 32 MiB and more (the LM head's
logits chunks and their gradients) are faulted in, zero-filled, every time they are made.

On glibc, training hands freed memory back (`retain_freed_memory(0)`, what `train.retain_memory_mb` auto is there): every
block of 1 MiB or more is mmap'd on its own (a fixed M_MMAP_THRESHOLD, which also stops glibc's adaptive one
from rising) and unmapped when freed, so resident memory follows what the step holds. Under glibc's adaptive
threshold the blocks of 1-32 MiB a training step makes and frees (activations, their gradients) come from
the heap, whose free chunks of mixed sizes fragment it: a SmolLM2-135M step of 8 x 256 tokens peaked at
6.2-6.5 GB resident against 4.2 GB handed back (BENCHMARKS.md). The price is that every such block is
faulted in afresh: `benchmarks/train_throughput.py`'s tailor side ran at 127-154 real tok/s handed back
(peak 4.06 GB) and 162-177 with `train.retain_memory_mb` 4096 (peak 5.5 GB) on the EPYC AVX2 kind.

`retain_freed_memory(cap_mb)` with a cap serves every allocation from the heap and lets nothing trim it on its own
(glibc's M_MMAP_MAX=0, M_TRIM_THRESHOLD at its maximum), so a step reuses the pages the last one freed.
Left at that (as this module did for training and scoring until issue 20), the heap only grew: blocks of
varying large sizes fragment it, and each new longest batch added to it for the rest of the process
(`make demo` peaked at 8.2-9.4 GB). So the retained memory has a cap: `keep_within_cap()`, called where
a step has freed what it used (the training loop after each optimizer step, scoring when it starts),
gives the free pages back (malloc_trim) once resident memory has grown more than the cap above where
the last trim left it. A cap below what one step frees trims every step and faults more than glibc's
own behaviour does (BENCHMARKS.md). `release_freed_memory()` gives the pages back unconditionally,
between phases (the loop does before training, before each validation and after training).

Training: `train.retain_memory_mb` (`training_cap_mb`), auto: 0 on glibc, handed back as above (with glibc's own
thresholds SmolLM2-135M training had measured 6.1 GB peak against 6.5 GB retained, at the same wall time).
Scoring outside training (`tailor eval`, the evaluations of `tailor run`) retains up to
`default_cap_mb()`, an eighth of the machine's RAM between 512 MiB and 4 GiB: its logits chunks are
200-300 MB a batch, and retained it measured 10-20% faster. `TAILOR_RETAIN_MEMORY=0` hands freed memory
back and `TAILOR_RETAIN_MEMORY=N` sets a cap of N MiB, for every command and over the setting.
mallopt is process-wide. Elsewhere than glibc (musl, macOS) these functions do nothing.

The `tailor` command runs on mimalloc instead (preload.py), which reuses freed pages by size and does not
fragment this way. By itself mimalloc gives pages back to the kernel a second after they are freed (its
purge delay), and a training step that makes and frees gigabytes then faults them in again: on a Xeon with
AMX, SmolLM2-135M trained at 535-557 real tok/s so (peaks 3359-3409 MB), at 634-677 with mimalloc never
purging (MIMALLOC_PURGE_DELAY=-1, 3640 MB) and at 662 under training's auto cap (3495 MB)
(`benchmarks/train_throughput.py --order tailor`). So on mimalloc a cap sets a purge delay that
never expires (mi_option_set at run time) and `keep_within_cap()`'s mi_collect alone gives pages back, as
malloc_trim does on glibc; a cap of 0 puts mimalloc's own delay back; training's auto cap there is
`default_cap_mb()`, kept past while over a quarter of the RAM is still available (`room_to_keep`): a model
whose steps free more than the eighth (SmolLM2-1.7B's shapes at 4 layers) otherwise faulted them in again
every step, 98.5 against 128.3 tok/s (`benchmarks/scale.py`). The mallopt settings are for glibc:
`TAILOR_ALLOCATOR=system`, and tailor used as a library.

oneDNN, behind torch's CPU matrix products, keeps the products it has compiled in a cache of 1024 by
default, one per shape and direction, each with its own buffers (0.3-3 MB for SmolLM2's shapes): with
batches of varying length every step makes new ones, and a training run's peak grew by ~0.6 GB until the
cache was full. Importing this module caps that cache at 128 (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`, read by
oneDNN when it makes its first product; a value already in the environment is left as it is): a shape
older than the last 128 products made is compiled again if it comes back. A pass of SmolLM2 makes about 25
(four projection shapes and the head, three directions each, the attention's), so 128 keeps the last few
passes' shapes: `train_throughput.py --order tailor` ran as fast with 128 as with 256 (390-413 vs 391-401
real tok/s) at 56-88 MB less (Xeon AMX); with 48 it ran 12% slower in one pair of runs (the shapes of a few
passes back are compiled again).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from pathlib import Path

from tailor import preload

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
GLIBC_MMAP_MAX = 65536  # glibc's default M_MMAP_MAX
HAND_BACK_THRESHOLD = 2**20  # blocks from 1 MiB up are mmap'd alone and unmapped when freed (128 KiB: 1% less)
MI_PURGE_DELAY = 15  # mi_option_purge_delay in mimalloc.h's mi_option_t (3.x)
KEPT_DELAY_MS = 2**30  # a purge delay (ms) that never expires: only mi_collect(force) gives freed pages back
AUTO = -1  # scoring's call: a cap already set, else default_cap_mb()
ROOM_FRACTION = 4  # train.retain_memory_mb auto on mimalloc keeps past its cap while a quarter of RAM is available
_state: dict[str, int] = {}  # "cap": the cap in force (MiB, 0 = none); "floor": resident MiB after the last trim;
# "grow": 1 where pages are kept past the cap while the machine has room
PRODUCT_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
os.environ.setdefault(PRODUCT_CACHE, "128")  # before torch's first product; see the module's docstring


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def total_memory_mb() -> int:
    """The machine's RAM in MiB (0 where unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (ValueError, OSError, AttributeError):
        return 0


def resident_mb() -> int:
    """This process's resident memory now, in MiB (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (OSError, ValueError, IndexError):
        return 0


def available_mb() -> tuple[int | None, str]:
    """(MiB the machine can still give this process, where the figure comes from): the kernel's MemAvailable,
    or a cgroup's memory.max less its memory.current where that is lower; None where neither is known."""
    free, source = None, "MemAvailable"
    try:
        with open("/proc/meminfo") as f:
            free = next((int(line.split()[1]) // 1024 for line in f if line.startswith("MemAvailable:")), None)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            left = (int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text())) // 2**20
            if free is None or left < free:
                free, source = left, "the cgroup's memory.max"
    except (OSError, ValueError):
        pass
    return free, source


def room_to_keep() -> bool:
    """True while the machine has over a quarter of its RAM available: freed pages kept past the cap then
    take nothing another process is waiting for."""
    free, _ = available_mb()
    return free is not None and free > total_memory_mb() // ROOM_FRACTION


def default_cap_mb() -> int:
    """Scoring's cap: an eighth of the machine's RAM, at least 512 MiB and at most 4 GiB."""
    return min(4096, max(512, total_memory_mb() // 8))


def training_cap_mb(setting: int | str) -> int:
    """train.retain_memory_mb as a cap: 'auto' is `default_cap_mb()` on mimalloc, whose kept pages are reused
    by size and do not fragment (and kept past it while the machine has room: `retain_freed_memory(grow=True)`),
    and 0 on glibc's malloc, whose heap does (module docstring)."""
    if setting != "auto":
        return int(setting)
    return default_cap_mb() if preload.mimalloc() is not None else 0


def _from_environment() -> int | None:
    """TAILOR_RETAIN_MEMORY: 0 (hand freed memory back), 1 or auto (the default cap), or a cap in MiB."""
    value = os.environ.get("TAILOR_RETAIN_MEMORY", "").strip().lower()
    if not value:
        return None
    if value in ("1", "auto", "on"):
        return AUTO
    try:
        return max(0, int(value))
    except ValueError:
        return AUTO


def retain_freed_memory(cap_mb: int = AUTO, grow: bool | None = None) -> bool:
    """Keep up to about `cap_mb` MiB of freed memory for reuse; 0 = hand it back. AUTO keeps what is already
    set in this process (and checks the cap), else sets `default_cap_mb()`: scoring calls it so, training
    passes train.retain_memory_mb. `grow` (train.retain_memory_mb auto, on mimalloc): past the cap, keep the
    pages while `room_to_keep()`, so a model whose steps free more than the cap does not fault them in again
    every step (SmolLM2-1.7B's shapes at 4 layers on AMX: 98.5 tok/s with the 2.9 GB cap, 115.7 without one).
    None leaves it as set. `TAILOR_RETAIN_MEMORY` overrides the argument. True when a cap is in force."""
    env = _from_environment()
    if env is not None:
        cap_mb, grow = env, False
    if grow is not None:
        _state["grow"] = int(grow)
    if cap_mb < 0:
        if "cap" in _state:  # a phase starts (scoring calls it so): the cap is checked as after a step
            keep_within_cap()
            return _state["cap"] > 0
        cap_mb = default_cap_mb()
    if _state.get("cap") == cap_mb:
        return cap_mb > 0
    if preload.mimalloc() is not None:
        return _mimalloc_cap(cap_mb)
    libc = _libc()
    if libc is None:
        _state["cap"] = 0
        return False
    if cap_mb == 0:  # hand back: large blocks mmap'd alone, the heap's top trimmed past twice that
        libc.mallopt(M_MMAP_MAX, GLIBC_MMAP_MAX)
        libc.mallopt(M_MMAP_THRESHOLD, HAND_BACK_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * HAND_BACK_THRESHOLD)
        release_freed_memory()
        _state["cap"] = 0
        return False
    took = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _state["cap"] = cap_mb if took else 0
    _state["floor"] = resident_mb()
    return took


def _mimalloc_cap(cap_mb: int) -> bool:
    """mimalloc: a cap keeps freed pages (a purge delay too long to expire), so `keep_within_cap()`'s mi_collect
    alone gives them back; 0 puts mimalloc's own delay back (its default, or MIMALLOC_PURGE_DELAY)."""
    mimalloc = preload.mimalloc()
    _state.setdefault("delay", mimalloc.mi_option_get(MI_PURGE_DELAY))
    if cap_mb == 0:
        mimalloc.mi_option_set(MI_PURGE_DELAY, _state["delay"])
        release_freed_memory()
    else:
        mimalloc.mi_option_set(MI_PURGE_DELAY, KEPT_DELAY_MS)
    _state["cap"] = cap_mb
    _state["floor"] = resident_mb()
    return cap_mb > 0


def retained_cap_mb() -> int:
    """The cap in force (0: none set, or freed memory handed back)."""
    return _state.get("cap", 0)


def keep_within_cap() -> bool:
    """Where the memory a step used has been freed: give the free pages back when resident memory has grown
    more than the cap above where the last trim left it, unless the cap may grow and the machine has room
    (`retain_freed_memory(grow=True)`). True when it trimmed. Costs a read of /proc (two past the cap)."""
    cap = _state.get("cap", 0)
    if not cap or resident_mb() - _state["floor"] <= cap:
        return False
    if _state.get("grow") and room_to_keep():
        return False
    return release_freed_memory()


def release_freed_memory() -> bool:
    """Give the heap's free pages back to the kernel (glibc's malloc_trim, or mimalloc's mi_collect), e.g. when
    a phase ends whose allocations the next one will not reuse. True when glibc released something (mimalloc
    does not say: True)."""
    mimalloc = preload.mimalloc()
    if mimalloc is not None:
        mimalloc.mi_collect(True)
        released = True
    else:
        libc = _libc()
        released = bool(libc is not None and libc.malloc_trim(0))
    if "cap" in _state:
        _state["floor"] = resident_mb()
    return released
