"""Anonymous memory of a config's setup, step by step: imports, model and tokenizer, prepared data made afresh.

    LD_PRELOAD=$(.venv/bin/python -c "from tailor.preload import library; print(library())") \\
        .venv/bin/python benchmarks/data_memory.py configs/dialogue/smollm2-chitchat.yaml [--while-alive]

Prints /proc/self/smaps_rollup's anonymous memory after each part, freed memory given back before each reading,
so what remains is what the process holds. "data made afresh" is the splits as `workflow.setup` makes them
(`made_afresh`, tasks/splits.py: copied once the parsed source is freed); with --while-alive, "data prepared" and
"data compacted" show them before and after `Splits.compacted` (the copy made while the source is still there).
"data dropped": without the splits. Each way in its own process. Linux only.
"""

from __future__ import annotations

import gc
import re
import sys


def anonymous_mib() -> int:
    gc.collect()
    from tailor.allocator import release_freed_memory

    release_freed_memory()
    text = open("/proc/self/smaps_rollup").read()
    return int(re.search(r"Anonymous:\s+(\d+)", text).group(1)) // 1024


def main() -> None:
    if len(sys.argv) not in (2, 3) or sys.argv[2:] not in ([], ["--while-alive"]):
        sys.exit(__doc__)
    from tailor.config import load_config
    from tailor.tasks import get_task
    from tailor.tasks.splits import made_afresh
    from tailor.workflow import context_length

    print(f"imports            {anonymous_mib():6d} MiB", flush=True)
    cfg = load_config(sys.argv[1])
    task = get_task(cfg.task)
    model, tokenizer = task.load(cfg)
    print(f"model, tokenizer   {anonymous_mib():6d} MiB", flush=True)
    if sys.argv[2:]:  # the copy made while the source is still there (Splits.compacted)
        splits = task.prepare(cfg, tokenizer, context_length(model))
        print(f"data prepared      {anonymous_mib():6d} MiB  ({sum(len(splits[s]) for s in ('train', 'validation', 'test'))} "
              "samples)", flush=True)
        compact = splits.compacted()
        del splits
        print(f"data compacted     {anonymous_mib():6d} MiB", flush=True)
    else:  # as workflow.setup makes them
        compact = made_afresh(lambda: task.prepare(cfg, tokenizer, context_length(model)))
        print(f"data made afresh   {anonymous_mib():6d} MiB  ({len(compact.train)} training samples)", flush=True)
    del compact
    print(f"data dropped       {anonymous_mib():6d} MiB", flush=True)


if __name__ == "__main__":
    main()
