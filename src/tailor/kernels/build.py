"""The C++ kernels: one extension built from this folder's sources, loaded once per process.

matmul.cpp, argmax.cpp, norm.cpp, rotary.cpp and widen.cpp (sharing bf16.h) compile into one library whose ops
are `torch.ops.tailor_kernels.*`. The first use builds it (g++ and ninja, under a minute) into
$TAILOR_CACHE/kernels (default ~/.cache/tailor/kernels), in a folder named by torch's version and a
digest of the sources and flags: a changed source builds afresh once, and a folder stays valid for the
sources it was built from.

adamw.cpp and adamw_fp8.cpp are a second library, `torch.ops.tailor_portable.*`, built for any x86-64 or other
CPU g++ targets (their loops are compiled for AVX-512F, AVX2 and the baseline, the loader picking one): `portable_built()`.

`supported()`: the CPU has the instructions of the bf16 kernels (AVX512-BF16). `available()`: those are
built, loaded and switched on; every caller falls back to torch's own ops where it is False. On a CPU with
AVX-512 but without AVX512-BF16 the library still builds, for its fp32 ops alone (AVX-512F: widen.cpp's product
of fp32 rows and bf16 weights, rotary_f32, argmax_f32, the fp32 norm); `avx512_available()` says they run here. `switched(on)` turns them
on or off for a block (`train.kernels`, `decode.kernels` through `kernels.patched`): off, nothing is built.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).parent
SOURCES = ("matmul.cpp", "argmax.cpp", "norm.cpp", "rotary.cpp", "widen.cpp")  # one per operation
HEADERS = ("bf16.h",)
NAME = "tailor_kernels"
# -fopenmp: at::parallel_for is OpenMP inside torch's headers; without it every kernel runs on one thread.
CFLAGS = ("-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mamx-tile", "-mamx-bf16", "-fopenmp")
LDFLAGS = ("-fopenmp",)
PORTABLE = ("adamw.cpp", "adamw_fp8.cpp")
PORTABLE_HEADERS = ("adamw.h",)
PORTABLE_NAME = "tailor_portable"
# No FMA contraction: the torch reference of each op (train/adamw_bf16.py, train/adamw_fp8.py) rounds as the C++ does, bit for bit.
PORTABLE_CFLAGS = ("-O3", "-fopenmp", "-fno-math-errno", "-ffp-contract=off")
LANES = 16  # fp32 values in an AVX-512 vector: outputs per block of a packed weight, a norm's row in steps of it

_on = True  # switched(...) sets it for a block; one process decodes or trains with one setting at a time


@functools.cache  # asked at every decoding product
def cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def supported() -> bool:
    """True when this CPU has the instructions the kernels need (AVX512-BF16): here they should build, and a
    failed build is a broken install, not a missing feature."""
    return "avx512_bf16" in cpu_flags()


def buildable() -> bool:
    """True when the fp32 kernels can run here (AVX-512F: widen.cpp, rotary_f32, argmax_f32, the fp32 norm); the
    bf16 ones need `supported()` too."""
    return "avx512f" in cpu_flags()


def digest(folder: Path = HERE, sources: tuple[str, ...] = SOURCES + HEADERS, flags: tuple[str, ...] = CFLAGS) -> str:
    """A digest of the sources, the headers, the flags and torch's version: the build folder's name."""
    h = hashlib.sha256(f"{torch.__version__}|{flags}|{LDFLAGS}".encode())
    for name in sources:
        h.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cache_folder(name: str = "kernels", key: str | None = None) -> Path:
    """Where an extension is built: one folder per torch version and content of the sources."""
    root = Path(os.environ.get("TAILOR_CACHE") or Path.home() / ".cache" / "tailor")
    return root / name / f"{torch.__version__}-{key or digest()}"


def _load(name: str, sources: tuple[str, ...], folder: Path, cflags: tuple[str, ...], what: str) -> bool:
    """Build (once per folder) and load an extension; False, with a warning, where it does not build."""
    from torch.utils.cpp_extension import load

    folder.mkdir(parents=True, exist_ok=True)
    # torch runs `ninja` from PATH; the one pip installed sits beside this interpreter.
    here = str(Path(sys.executable).parent)
    if here not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = here + os.pathsep + os.environ.get("PATH", "")
    try:
        load(name=name, sources=[str(HERE / s) for s in sources], extra_include_paths=[str(HERE)],
             build_directory=str(folder), is_python_module=False, extra_cflags=list(cflags),
             extra_ldflags=list(LDFLAGS))
    except Exception as error:  # no compiler, no ninja: everything still runs, on torch's own ops
        warnings.warn(f"tailor: the C++ {what} did not build ({error}); torch's own ops run instead", stacklevel=3)
        return False
    return True


@functools.cache
def built() -> bool:
    """True when the extension is built and loaded in this process (the first call builds it)."""
    if not buildable():
        return False
    if hasattr(torch.ops.tailor_kernels, "dot_bf16"):  # loaded already: a namespace registers once per process
        return True
    return _load(NAME, SOURCES, cache_folder(), CFLAGS,
                 "kernels (train.kernels / decode.kernels: false skips the build)")


@functools.cache
def portable_built() -> bool:
    """True when the optimizer steps' library (adamw.cpp, adamw_fp8.cpp) is built and loaded in this process (the
    first call builds it)."""
    if hasattr(torch.ops.tailor_portable, "adamw_fp8_"):
        return True
    key = digest(HERE, PORTABLE + PORTABLE_HEADERS, PORTABLE_CFLAGS)
    return _load(PORTABLE_NAME, PORTABLE, cache_folder("portable", key), PORTABLE_CFLAGS, "optimizer steps (adamw.cpp, adamw_fp8.cpp)")


def available() -> bool:
    """True when the bf16 kernels are switched on (the default), the CPU has AVX512-BF16 and they built."""
    return _on and supported() and built()


def avx512_available() -> bool:
    """True when the kernels that need AVX-512F alone are switched on and built here: the fp32 ones (widen.cpp's
    product on bf16 weights, rotary_f32, argmax_f32, norm.cpp's fp32 norm); the others need `supported()` too."""
    return _on and buildable() and built()


@contextlib.contextmanager
def switched(on: bool):
    """Within the block the kernels are on or off (off: `available()` is False and nothing builds); the
    state before comes back after it. A process-wide switch: the server's decoding thread sees it too."""
    global _on
    before, _on = _on, on
    try:
        yield
    finally:
        _on = before
