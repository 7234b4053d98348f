"""Where tensors live and in which precision they compute: the one place that names devices.

Every command runs on one device per process, chosen once (`choose`): `auto` takes CUDA, then
Apple's MPS, then the CPU. Under torchrun / `accelerate launch` with several processes, Accelerate
(`accelerate.PartialState`) joins the process group (nccl on GPUs, gloo on CPUs) and gives each
process its own device (cuda:LOCAL_RANK). Models are placed with `place`, batches with `put`.

Mixed precision follows the device: bf16 autocast on CPUs with native bf16 (AVX512-BF16 / AMX) and
on GPUs that support it, fp16 with loss scaling on GPUs without bf16, fp32 otherwise.

tailor's CPU speed paths (the C++ kernels, the resident LM head, the sparse embedding gradient,
the lean MLP backward, the retained heap) apply only where `is_cpu()`; everything else takes PyTorch's own path.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys

import torch

from tailor.errors import TailorError

CHOICES = ("auto", "cpu", "cuda", "mps")
CPU, CUDA, MPS = "cpu", "cuda", "mps"
_current: torch.device | None = None


def launched() -> bool:
    """True when started by torchrun / accelerate launch with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve(name: str = "auto") -> torch.device:
    """The device a setting names, checked against what this machine has (a clear error otherwise)."""
    if name not in CHOICES:
        raise TailorError(f"device '{name}' is not one of {', '.join(CHOICES)}.")
    if name == "auto":
        name = CUDA if cuda_available() else MPS if mps_available() else CPU
    if name == CUDA and not cuda_available():
        raise TailorError("device 'cuda' was asked for (train.device / --device) but torch sees no CUDA GPU "
                          f"(torch {torch.__version__}); use device cpu or auto.")
    if name == MPS and not mps_available():
        raise TailorError("device 'mps' was asked for (train.device / --device) but this machine has no Apple "
                          "MPS device; use device cpu or auto.")
    if name == CUDA and launched():  # each process its own GPU
        return torch.device(CUDA, int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name, 0) if name == CUDA else torch.device(name)


def choose(name: str = "auto") -> torch.device:
    """Fix this process's device (every later `current()`); under a multi-process launch, Accelerate joins
    the process group for it. Returns the device."""
    global _current
    device = resolve(name)
    if launched():
        from accelerate import PartialState

        state = PartialState(cpu=device.type == CPU)  # inits nccl / gloo from torchrun's variables
        device = state.device
    if device.type == CUDA:
        torch.cuda.set_device(device)
    _current = device
    return device


def current() -> torch.device:
    """This process's device: the one `choose` fixed, else what `auto` picks."""
    global _current
    if _current is None:
        _current = resolve("auto")
    return _current


def is_cpu(device: torch.device | None = None) -> bool:
    return (device or current()).type == CPU


def place(model: torch.nn.Module, device: torch.device | None = None) -> torch.nn.Module:
    """Move a model's weights to the device (in place; a no-op where they already are)."""
    device = device or current()
    if any(p.device != device for p in model.parameters()):
        model.to(device)
    return model


def put(batch, device: torch.device | None = None):
    """A batch's tensors on the device (dicts, lists and tuples walked; other values as they are).
    Non-blocking copies on CUDA (from pageable memory: a batch is small beside a step); on the CPU the same
    tensors come back."""
    device = device or current()
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=device.type == CUDA)
    if isinstance(batch, dict):
        return {k: put(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(put(v, device) for v in batch)
    return batch


def cpu_has_bf16() -> bool:
    """True when the CPU does bf16 arithmetic natively: AVX512-BF16 or AMX on x86, ARM's BF16 extension.

    oneDNN's own check also says yes on any AVX-512 CPU, where it emulates bf16; on a Xeon whose
    hypervisor hides AVX512-BF16 and AMX, bf16 autocast made training 1.9x and scoring 3.5x slower
    than fp32 (SmolLM2-135M), so emulation does not count."""
    try:
        if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def gpu_has_bf16(device: torch.device) -> bool:
    return device.type == CUDA and torch.cuda.is_bf16_supported()


def half_dtype(precision: str, device: torch.device | None = None) -> torch.dtype | None:
    """The autocast dtype for train.precision on the device, or None for fp32.

    auto: bf16 on CPUs with native bf16 and on bf16 GPUs, fp16 on older GPUs, fp32 elsewhere. 'bf16' is
    honoured where the device can run it (emulated on CPUs without native bf16, as before)."""
    device = device or current()
    if precision == "fp32":
        return None
    if device.type == CPU:
        return torch.bfloat16 if precision == "bf16" or cpu_has_bf16() else None
    if device.type == CUDA:
        if precision == "fp16":
            return torch.float16
        return torch.bfloat16 if gpu_has_bf16(device) else torch.float16
    if precision in ("bf16", "fp16"):  # MPS: autocast only when asked for
        return torch.bfloat16 if precision == "bf16" else torch.float16
    return None


def check_precision(precision: str, device: torch.device | None = None) -> None:
    device = device or current()
    if precision == "fp16" and device.type == CPU:
        raise TailorError("train.precision 'fp16' needs a GPU (fp16 with loss scaling); on the CPU use auto, bf16 "
                          "or fp32.")


def autocast(dtype: torch.dtype | None, device: torch.device | None = None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast((device or current()).type, dtype=dtype)


def precision_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def describe(dtype: torch.dtype | None, device: torch.device | None = None) -> str:
    """'device cuda:0, bf16': said once at the start of a run."""
    return f"device {device or current()}, {precision_name(dtype)}"


def reset_peak_memory(device: torch.device | None = None) -> None:
    device = device or current()
    if device.type == CUDA:
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device | None = None) -> float:
    """The device's peak memory so far in MB: CUDA's largest allocation (since the last reset), MPS's
    driver allocation, or the process's peak RSS on the CPU."""
    device = device or current()
    if device.type == CUDA:
        return torch.cuda.max_memory_allocated(device) / 2**20
    if device.type == MPS:
        return torch.mps.driver_allocated_memory() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def gpu_memory_mb(device: torch.device) -> tuple[float, float] | None:
    """(MB allocated now, MB free) on a CUDA device; None elsewhere (the caller reads the process instead)."""
    if device.type != CUDA:
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return torch.cuda.memory_allocated(device) / 2**20, free / 2**20


def synchronize(device: torch.device | None = None) -> None:
    """Wait for the device's queued work (timings on a GPU measure nothing without it)."""
    device = device or current()
    if device.type == CUDA:
        torch.cuda.synchronize(device)
    elif device.type == MPS:
        torch.mps.synchronize()


def rng_state(device: torch.device | None = None) -> dict:
    """The device's random-number state beside the CPU's, for exact resume."""
    device = device or current()
    return {"cuda": torch.cuda.get_rng_state(device)} if device.type == CUDA else {}


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    device = device or current()
    if device.type == CUDA and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def collective_device() -> torch.device:
    """Where tensors for a collective must live: nccl reduces GPU tensors, gloo CPU ones."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == backend(current()):
        return current()
    return torch.device(CPU)


def of(model: torch.nn.Module) -> torch.device:
    """The device a model's weights are on."""
    return next(model.parameters()).device


def backend(device: torch.device | None = None) -> str:
    """The collective backend for the device: nccl for CUDA GPUs, gloo otherwise."""
    return "nccl" if (device or current()).type == CUDA else "gloo"
