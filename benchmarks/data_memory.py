"""Anonymous memory of a config's setup, step by step: imports, model and tokenizer, prepared data, compacted data.

    LD_PRELOAD=$(.venv/bin/python -c "from tailor.preload import library; print(library())") \\
        .venv/bin/python benchmarks/data_memory.py configs/dialogue/smollm2-chitchat.yaml

Prints /proc/self/smaps_rollup's anonymous memory after each part, freed memory given back before each reading,
so what remains is what the process holds. "data compacted" shows what `Splits.compacted` (tasks/splits.py), as
`workflow.setup` calls it, frees of the parsed source the kept samples' objects pinned; the last lines prepare the
data again and make the copy only after the source is freed. Linux only.
"""

from __future__ import annotations

import gc
import pickle
import re
import sys


def anonymous_mib() -> int:
    gc.collect()
    from tailor.allocator import release_freed_memory

    release_freed_memory()
    text = open("/proc/self/smaps_rollup").read()
    return int(re.search(r"Anonymous:\s+(\d+)", text).group(1)) // 1024


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    from tailor.config import load_config
    from tailor.tasks import get_task
    from tailor.workflow import context_length

    print(f"imports            {anonymous_mib():6d} MiB", flush=True)
    cfg = load_config(sys.argv[1])
    task = get_task(cfg.task)
    model, tokenizer = task.load(cfg)
    print(f"model, tokenizer   {anonymous_mib():6d} MiB", flush=True)
    splits = task.prepare(cfg, tokenizer, context_length(model))
    print(f"data prepared      {anonymous_mib():6d} MiB  ({sum(len(splits[s]) for s in ('train', 'validation', 'test'))} samples)",
          flush=True)
    compact = splits.compacted()  # as workflow.setup does: the copy is made while the source is still there
    del splits
    print(f"data compacted     {anonymous_mib():6d} MiB", flush=True)
    del compact
    print(f"data dropped       {anonymous_mib():6d} MiB", flush=True)
    # the other order: the splits pickled, the source freed, then the copy made
    blob = pickle.dumps(task.prepare(cfg, tokenizer, context_length(model)))
    print(f"again, pickled     {anonymous_mib():6d} MiB", flush=True)
    again = pickle.loads(blob)
    del blob
    print(f"made from pickle   {anonymous_mib():6d} MiB  ({len(again.train)} training samples)", flush=True)


if __name__ == "__main__":
    main()
