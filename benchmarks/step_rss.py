"""Resident memory inside training steps, named by the module the forward or backward is in.

    .venv/bin/python benchmarks/step_rss.py train configs/dialogue/smollm2-chitchat.yaml train.max_steps=12 \\
        train.eval_every=0 name=trace --overwrite

Runs `tailor ARGS` in this process with forward and backward pre-hooks on the model's modules (four levels deep)
and a thread sampling /proc/self/statm every millisecond. Prints, per step, the memory between steps (after the
optimizer step and zero_grad), and for each pass the forward's and the backward's highest sample, then where the
highest sample of the run was. `rss_trace.py` shows whole phases; this shows a step's parts.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time

from tailor.train import loop


def main() -> None:
    tag, samples, done = ["start"], [], threading.Event()
    patched, clip_and_step = loop.patched, loop.clip_and_step

    @contextlib.contextmanager
    def hooked(model, **kwargs):
        hooks = []
        for name, module in model.named_modules():
            if name.count(".") <= 3:
                hooks.append(module.register_forward_pre_hook(lambda m, a, n=name: tag.__setitem__(0, "F " + n)))
                hooks.append(module.register_full_backward_pre_hook(lambda m, g, n=name: tag.__setitem__(0, "B " + n)))
        with patched(model, **kwargs) as paths:
            yield paths
        for hook in hooks:
            hook.remove()

    def stepped(*args, **kwargs):
        tag[0] = "optimizer step"
        norm = clip_and_step(*args, **kwargs)
        tag[0] = "between steps"
        return norm

    def sample() -> None:
        with open("/proc/self/statm") as f:
            while not done.is_set():
                f.seek(0)
                samples.append((int(f.read().split()[1]) * 4096 // 2**20, tag[0]))
                time.sleep(0.001)

    loop.patched, loop.clip_and_step = hooked, stepped
    threading.Thread(target=sample, daemon=True).start()
    from tailor.cli import main as tailor

    sys.argv = ["tailor"] + sys.argv[1:]
    try:
        tailor()
    except SystemExit:
        pass
    done.set()
    # Fold the samples into parts: a forward runs from its embedding to the head, a backward from the head down.
    parts: list[list] = []
    for mb, name in samples:
        kind = "forward" if name.startswith("F ") else "backward" if name.startswith("B ") else name
        if not parts or parts[-1][0] != kind:
            parts.append([kind, mb, mb])
        parts[-1][1], parts[-1][2] = min(parts[-1][1], mb), max(parts[-1][2], mb)
    print("\nresident MiB per part (lowest - highest):")
    for kind, low, high in parts:
        if kind in ("forward", "backward", "between steps"):
            print(f"  {kind:14} {low:6d} - {high:6d}")
    mb, name = max(samples)
    print(f"highest: {mb} MiB in {name}")


if __name__ == "__main__":
    main()
