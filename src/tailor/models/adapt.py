"""Make a loaded model ready for fine-tuning per the model section: freezing or LoRA, then report."""

from __future__ import annotations

import torch

from tailor.config.model import ModelConfig
from tailor.models.freeze import apply_freezing, describe_trainable, head_names
from tailor.models.lora import wrap
from tailor.models.quantize import is_quantized, prepare_for_training


def adapt(model, m: ModelConfig, kind: str, seed: int = 0, new_tokens: list[int] | None = None, vocab_size: int = 0):
    """kind: 'causal', 'seq2seq' or 'classification'. Prints trainable vs total parameters.
    `seed` fixes the adapters' random initialisation, so a run is reproducible. `new_tokens`: ids the
    tokenizer gained (data.chat_format chatml); the embeddings grow to `vocab_size` rows for them, the new
    rows starting at the mean embedding, and they train (with LoRA, those rows alone beside the adapters)."""
    if new_tokens and vocab_size > model.get_input_embeddings().num_embeddings:
        torch.manual_seed(seed)
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
    if m.lora.rank:
        torch.manual_seed(seed)
        if is_quantized(model):  # QLoRA: peft readies the quantized base (norms in fp32, input gradients)
            model = prepare_for_training(model, gradient_checkpointing=False)  # the loop switches it on
        model = wrap(model, m.lora, kind, head_names(model) if kind == "classification" else None, new_tokens)
    else:
        apply_freezing(model, m.freeze, m.freeze_layers, m.train_top_layers)
    print(describe_trainable(model), flush=True)
    return model
