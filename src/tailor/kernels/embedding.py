"""The tied embedding's gradient from the rows a batch uses, not a fresh vocabulary-sized buffer.

With a tied LM head (SmolLM2, GPT-2) the input embedding's backward builds a dense (vocab, hidden)
zero buffer and adds the used rows into it: 113 MB for SmolLM2 in fp32, new memory every step,
so every step page-faults and zero-fills it (about 10% of a training step, BENCHMARKS.md). As a
sparse gradient the same rows are added in place into the head's dense gradient, which autograd
sums with it before the weight's gradient is set: the same values, without the buffer.

Only where that sum is sure to happen: the weight is the output head's (its dense gradient arrives
in the same backward) and one process trains (DDP and FSDP reduce dense buckets).
"""

from __future__ import annotations

import contextlib

import torch


def tied_embedding(model: torch.nn.Module) -> torch.nn.Embedding | None:
    """The input embedding when it is a plain nn.Embedding sharing its trainable weight with the output head."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wrapper
    get_in, get_out = getattr(inner, "get_input_embeddings", None), getattr(inner, "get_output_embeddings", None)
    if get_in is None or get_out is None:
        return None
    embedding, head = get_in(), get_out()
    if type(embedding) is not torch.nn.Embedding or head is None or getattr(head, "weight", None) is not embedding.weight:
        return None
    return embedding if embedding.weight.requires_grad and embedding.max_norm is None else None


@contextlib.contextmanager
def sparse_tied_gradient(model: torch.nn.Module, enabled: bool = True):
    """Within the block, a tied embedding hands autograd a sparse gradient (see the module's docstring).
    Yields whether it does."""
    embedding = tied_embedding(model) if enabled else None
    if embedding is None or embedding.sparse:
        yield False
        return
    embedding.sparse = True
    try:
        yield True
    finally:
        embedding.sparse = False


def densify(model: torch.nn.Module) -> None:
    """A gradient left sparse (its head's dense part never came: the head was not in the loss) made dense
    for clipping and the fused optimizer."""
    embedding = tied_embedding(model)
    if embedding is not None and embedding.weight.grad is not None and embedding.weight.grad.is_sparse:
        embedding.weight.grad = embedding.weight.grad.to_dense()
