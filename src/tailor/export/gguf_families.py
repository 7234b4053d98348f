"""What differs between the model families GGUF export supports: hyperparameter keys and tensor layouts.

Tensor names come from the `gguf` package's map for each architecture (the one llama.cpp's converter
uses); only the layout changes llama.cpp expects are done here:
- llama: query/key rows reordered from Hugging Face's rotary layout to llama.cpp's (`_rotary_pairs`);
- qwen2: none (llama.cpp rotates Qwen2 in Hugging Face's layout, "neox" style); q/k/v carry biases;
- gpt2: Conv1D weights are stored [in, out], the transpose of nn.Linear's, so they are transposed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from tailor.errors import TailorError

FAMILIES = ("llama", "qwen2", "gpt2")


def family(config) -> str:
    kind = getattr(config, "model_type", None)
    if kind not in FAMILIES:
        raise TailorError(f"GGUF export supports the model families {', '.join(FAMILIES)}; this model is '{kind}'.")
    if kind in ("llama", "qwen2"):
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        if rope.get("rope_type", "default") != "default":
            raise TailorError(f"GGUF export does not support rope scaling '{rope.get('rope_type')}'.")
    if kind == "llama" and (getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)):
        raise TailorError("GGUF export does not support llama models with biases.")
    if kind == "qwen2" and getattr(config, "use_sliding_window", False):
        raise TailorError("GGUF export does not support Qwen2 models with sliding-window attention.")
    if kind == "gpt2":
        if config.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            raise TailorError(f"GGUF export: llama.cpp's GPT-2 uses the tanh GELU; this model uses "
                              f"'{config.activation_function}'.")
        if config.scale_attn_by_inverse_layer_idx or not config.scale_attn_weights:
            raise TailorError("GGUF export supports GPT-2 models with the standard attention scaling only.")
    return kind


def rope_theta(config) -> float:
    rope = getattr(config, "rope_parameters", None) or {}
    return float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def add_hyperparameters(w, config, kind: str) -> None:
    """The `<arch>.*` keys llama.cpp reads for this family."""
    if kind == "gpt2":
        w.add_context_length(config.n_positions)
        w.add_embedding_length(config.n_embd)
        w.add_block_count(config.n_layer)
        w.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
        w.add_head_count(config.n_head)
        w.add_layer_norm_eps(float(config.layer_norm_epsilon))
        return
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(rope_theta(config))
    w.add_layer_norm_rms_eps(float(config.rms_norm_eps))


def _rotary_pairs(weight: np.ndarray, heads: int) -> np.ndarray:
    """[heads*head_dim, ...] rows per head from [first half | second half] to [x0, y0, x1, y1, ...].

    Hugging Face's Llama rotates dimension i with dimension i + head_dim/2; llama.cpp's llama rotates
    neighbours 2i and 2i+1. Reordering the projection's output rows this way gives the same
    attention scores under llama.cpp's rotation.
    """
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def tensors(model, kind: str) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every tensor llama.cpp needs, in llama.cpp's layout."""
    import gguf
    from transformers.pytorch_utils import Conv1D

    config = model.config
    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2, "gpt2": gguf.MODEL_ARCH.GPT2}[kind]
    layers = config.n_layer if kind == "gpt2" else config.num_hidden_layers
    names = gguf.get_tensor_name_map(arch, layers)
    conv1d = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, Conv1D)}
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when the file has no output.weight
        if hf_name.endswith(("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")):
            continue  # buffers (rotary frequencies, GPT-2's causal mask), not weights
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise TailorError(f"GGUF export does not know where the tensor '{hf_name}' goes.")
        data = tensor.detach().to(torch.float32).cpu().numpy()
        if hf_name in conv1d:
            data = data.T
        if kind == "llama" and hf_name.endswith("q_proj.weight"):
            data = _rotary_pairs(data, config.num_attention_heads)
        elif kind == "llama" and hf_name.endswith("k_proj.weight"):
            data = _rotary_pairs(data, config.num_key_value_heads)
        yield name, np.ascontiguousarray(data)
