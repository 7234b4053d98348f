"""Freeze parts of a model: the embeddings, the first N blocks, or everything but the head.

Works on any Hugging Face model by structure, not by name lists per architecture:
- blocks are the outermost ModuleLists (`model.layers`, `encoder.block`, `decoder.layers`, `h`, ...);
  an encoder-decoder has two stacks and "the first N blocks" applies to each;
- the head is whatever lies outside the base model (a classifier's `score`/`classifier`, an LM's `lm_head`).
"""

from __future__ import annotations

import torch

from tailor.errors import TailorError


def block_lists(model: torch.nn.Module) -> list[tuple[str, torch.nn.ModuleList]]:
    """The outermost ModuleLists of repeated blocks, in module order."""
    found: list[tuple[str, torch.nn.ModuleList]] = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.ModuleList) or len(module) == 0:
            continue
        if any(name.startswith(outer + ".") for outer, _ in found):
            continue  # a list inside a block (T5's block.0.layer)
        if len({type(m) for m in module}) == 1 and any(True for _ in module.parameters()):
            found.append((name, module))
    return found


def head_names(model: torch.nn.Module) -> list[str]:
    """Top-level submodules that are not the base model: the task head(s)."""
    prefix = getattr(model, "base_model_prefix", "")
    body = getattr(model, prefix, None) if prefix else None
    names = [n for n, m in model.named_children() if m is not body and any(True for _ in m.parameters())]
    if body is None:  # encoder-decoder LMs (T5) keep encoder/decoder/shared at the top level
        names = [n for n in names if n in ("lm_head", "score", "classifier", "classification_head")]
    return names


def embedding_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    params = list(model.get_input_embeddings().parameters())
    for name, module in model.named_modules():
        if name.split(".")[-1] in ("embed_positions", "wpe", "position_embeddings", "embed_scale_positions"):
            params += list(module.parameters())
    return params


def final_norms(model: torch.nn.Module, blocks: list[str]) -> list[torch.nn.Module]:
    """Norm layers outside every block and outside the embeddings (e.g. Llama's model.norm)."""
    out = []
    for name, module in model.named_modules():
        if "norm" not in type(module).__name__.lower() or any(name.startswith(b + ".") for b in blocks):
            continue
        if "embed" in name:
            continue
        out.append(module)
    return out


def apply_freezing(model: torch.nn.Module, freeze: str, freeze_layers: int, train_top_layers: int) -> None:
    """Set requires_grad per the model.freeze / freeze_layers / train_top_layers settings."""
    stacks = block_lists(model)
    if (freeze_layers or train_top_layers) and not stacks:
        raise TailorError(f"model.freeze_layers / train_top_layers: found no transformer blocks in {type(model).__name__}.")
    for name, blocks in stacks:
        if freeze_layers > len(blocks) or train_top_layers > len(blocks):
            raise TailorError(f"model.freeze_layers={freeze_layers} / train_top_layers={train_top_layers}: "
                              f"{name} has only {len(blocks)} blocks.")
    if freeze == "body":
        heads = head_names(model)
        if not heads:
            raise TailorError(f"model.freeze=body: {type(model).__name__} has no output head outside its body.")
        model.requires_grad_(False)
        for head in heads:
            getattr(model, head).requires_grad_(True)
        if train_top_layers:
            for _, blocks in stacks:
                for block in blocks[len(blocks) - train_top_layers :]:
                    block.requires_grad_(True)
            for norm in final_norms(model, [n for n, _ in stacks]):
                norm.requires_grad_(True)
    elif freeze == "embeddings":
        for p in embedding_params(model):
            p.requires_grad_(False)
    for _, blocks in stacks:
        for block in blocks[:freeze_layers]:
            block.requires_grad_(False)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; tied tensors counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def describe_trainable(model: torch.nn.Module) -> str:
    trainable, total = parameter_counts(model)
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)"
