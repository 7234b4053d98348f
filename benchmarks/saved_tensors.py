"""What one SmolLM2-135M training forward keeps for its backward, by autograd node, each storage counted once.

    .venv/bin/python benchmarks/saved_tensors.py 8 256      # rows, tokens a row

tailor's CPU speed paths on (kernels.patched), train.precision auto, random ids, the last half of each row
supervised. Walks the autograd graph from the loss and sums the tensors each node saved (parameters left out).
"""
import collections, sys, torch
from tailor import device as devices
from tailor.kernels import patched
from tailor.models.load import load
from tailor.train.loss import token_stats

batch, length = int(sys.argv[1]), int(sys.argv[2])
model, _ = load("smollm2-135m-instruct")
model.train()
ids = torch.randint(100, 40000, (batch, length), generator=torch.Generator().manual_seed(0))
labels = ids.clone(); labels[:, : length // 2] = -100
rows = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
half = devices.half_dtype("auto")
with patched(model, training=True, optimizer=None, half=half) as names:
    print(names)
    with devices.autocast(half):
        nll, n, _ = token_stats(model, rows)
params = {p.data_ptr() for p in model.parameters()}
seen, by = set(), collections.Counter()
stack, visited = [nll.grad_fn], set()
while stack:
    node = stack.pop()
    if node is None or node in visited: continue
    visited.add(node)
    tensors = []
    for attr in dir(node):
        if attr.startswith("_saved_"):
            try: v = getattr(node, attr)
            except Exception: continue
            if isinstance(v, torch.Tensor): tensors.append(v)
            elif isinstance(v, (tuple, list)): tensors += [t for t in v if isinstance(t, torch.Tensor)]
    try: tensors += [t for t in node.saved_tensors if isinstance(t, torch.Tensor)]
    except Exception: pass
    for t in tensors:
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen or ptr in params or ptr == 0: continue
        seen.add(ptr)
        by[type(node).__name__] += t.untyped_storage().nbytes()
    stack += [f for f, _ in node.next_functions]
total = sum(by.values())
for name, b in by.most_common(25): print(f"{b/2**20:9.1f} MB  {name}")
print(f"{total/2**20:9.1f} MB total")
