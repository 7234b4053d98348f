"""Where a training step's time goes on a GPU: launch latency, the matmul peak, and one plain step profiled.

    python benchmarks/gpu_step.py [--model NAME_OR_FOLDER] [--device cuda|cpu]

Prints: a Python loop's time (the host's speed), the cost of launching an empty kernel (eager, and replayed from
a CUDA graph), an 8192^3 bf16 product's TFLOP/s, and a plain training step of the Hugging Face model (8 x 128
random tokens, bf16 autocast, fused AdamW, clipping): its wall time, the GPU kernels it launches and their GPU
time. A step whose GPU time is a small part of its wall time waits on the host (the case of SmolLM2-135M on an
H200: BENCHMARKS.md). `--device cpu` runs the same on the CPU (no kernel counts), to try the script.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL  # noqa: E402


def seconds(fn, repeats: int, sync) -> float:
    sync()
    tick = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - tick) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=MODEL, help="a model name or folder (default: the embedded SmolLM2-135M)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    a = p.parse_args()
    dev = a.device
    from tailor import device as devices

    def sync():
        devices.synchronize(torch.device(dev))

    tick, total = time.perf_counter(), 0
    for i in range(3_000_000):
        total += i
    print(f"host: a Python loop of 3e6 additions takes {time.perf_counter() - tick:.3f} s")
    x = torch.zeros(1, device=dev)
    seconds(lambda: x.add_(1), 200, sync)  # warm-up
    print(f"eager launch: {seconds(lambda: x.add_(1), 2000, sync) * 1e6:.1f} us per empty kernel")
    if dev == "cuda":
        graph, side = torch.cuda.CUDAGraph(), torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # captures must follow a warm-up on a side stream
            x.add_(1)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            for _ in range(200):
                x.add_(1)
        print(f"graph replay: {seconds(graph.replay, 10, sync) / 200 * 1e6:.2f} us per empty kernel")
        m = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        seconds(lambda: m @ m, 3, sync)
        print(f"8192^3 bf16 product: {2 * 8192**3 / seconds(lambda: m @ m, 10, sync) / 1e12:.0f} TFLOP/s")

    from tailor.models.load import load

    model = load(a.model)[0].to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev == "cuda")
    ids = torch.randint(0, model.config.vocab_size, (8, 128), device=dev)

    def step():
        with torch.autocast(dev, dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds(step, 5, sync)
    print(f"plain training step (8 x 128 tokens, bf16 autocast, fused AdamW, clipping): "
          f"{seconds(step, 10, sync) * 1e3:.1f} ms")
    if dev == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            seconds(step, 2, sync)
        events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
        print(f"per step: {sum(e.count for e in events) / 2:.0f} GPU kernels, "
              f"{sum(e.self_device_time_total for e in events) / 2 / 1e3:.1f} ms of GPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=40))


if __name__ == "__main__":
    main()
