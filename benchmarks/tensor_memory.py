"""The tensors alive during a training run, by kind, at their peak and over time (torch.profiler's memory timeline).

    .venv/bin/python benchmarks/tensor_memory.py train configs/dialogue/smollm2-chitchat.yaml train.max_steps=4 \\
        train.eval_every=0 data.max_val_samples=8 name=trace --overwrite

Runs `tailor ARGS` in this process with `train.loop.train` under the profiler (profile_memory, shapes and
stacks, which the timeline needs to tell parameters, gradients, optimizer state and activations apart),
then prints the CPU tensors' total at its peak by category, each category's own peak, and the highest total
in each half second. Resident memory (`rss_trace.py`, `step_rss.py`) adds to these the libraries, the
allocator's kept pages and oneDNN's cache of compiled products; the profiler slows the run several times,
so keep it to a few steps.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from tailor import workflow
from tailor.train import loop

# The order of torch.profiler._memory_profiler's categories in a raw timeline's rows (after the time).
KINDS = ("parameters", "optimizer state", "inputs", "temporaries", "activations", "gradients", "autograd detail",
         "unknown")


def main() -> None:
    timeline = Path(tempfile.mkdtemp()) / "memory.raw.json"
    train = loop.train

    def profiled(*args, **kwargs):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            result = train(*args, **kwargs)
        prof.export_memory_timeline(str(timeline), device="cpu")
        return result

    workflow.train = profiled  # the workflow calls the loop by this name
    from tailor.cli import main as tailor

    sys.argv = ["tailor"] + sys.argv[1:]
    try:
        tailor()
    except SystemExit:
        pass
    times, rows = json.loads(timeline.read_text())
    totals = [sum(row[1:]) for row in rows]
    top = max(range(len(totals)), key=totals.__getitem__)
    mib = 2**20
    print(f"\ntensors at their peak, {(times[top] - times[0]) / 1e6:.1f} s in: {totals[top] / mib:.0f} MiB")
    for k, kind in enumerate(KINDS, start=1):
        print(f"  {kind:16} {rows[top][k] / mib:7.0f} MiB   (own peak {max(r[k] for r in rows) / mib:.0f})")
    print("highest total in each half second (MiB):")
    windows: dict[int, int] = {}
    for i, t in enumerate(times):
        w = int((t - times[0]) / 5e5)
        if w not in windows or totals[i] > totals[windows[w]]:
            windows[w] = i
    for w, i in windows.items():
        parts = "  ".join(f"{kind} {rows[i][k] / mib:.0f}" for k, kind in enumerate(KINDS, start=1) if rows[i][k] >= mib)
        print(f"  {w / 2:6.1f} s {totals[i] / mib:6.0f}  {parts}")


if __name__ == "__main__":
    main()
