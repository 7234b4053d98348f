"""Write a llama-family causal LM as one GGUF file, tokenizer and chat template included.

The file follows llama.cpp's conventions, so llama.cpp-based runtimes and transformers'
GGUF loader (`from_pretrained(folder, gguf_file=name)`) both read it:
- hyperparameters under `llama.*`, tensors under llama.cpp's names (`blk.N.attn_q.weight`, ...);
- the query and key projections reordered from Hugging Face's rotary layout (the two halves of
  each head's dimensions) to llama.cpp's (interleaved pairs), see `_rotary_pairs`;
- a byte-level BPE tokenizer as `tokenizer.ggml.model = "gpt2"`: tokens, types, merges, special ids,
  and `tokenizer.chat_template`.
Weights are written as f32, f16 or q8_0 (matrices only; norms stay f32).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from tailor.errors import TailorError

DTYPES = ("f32", "f16", "q8_0")


def _rotary_pairs(weight: np.ndarray, heads: int) -> np.ndarray:
    """[heads*head_dim, in] rows per head from [first half | second half] to [x0, y0, x1, y1, ...].

    Hugging Face's Llama rotates dimension i with dimension i + head_dim/2; llama.cpp rotates
    neighbours 2i and 2i+1. Reordering the projection's output rows this way gives the same
    attention scores under llama.cpp's rotation.
    """
    rows, cols = weight.shape
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def _tokenizer_fields(tokenizer, vocab_size: int) -> dict:
    """Tokens, types and merges of a byte-level BPE tokenizer, in llama.cpp's 'gpt2' form."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TailorError("GGUF export needs a fast tokenizer (tokenizer.json).")
    spec = json.loads(backend.to_str())
    model, decoder = spec.get("model") or {}, spec.get("decoder") or {}
    if model.get("type") != "BPE" or decoder.get("type") != "ByteLevel":
        raise TailorError(f"GGUF export supports byte-level BPE tokenizers (GPT-2 style); this one is "
                          f"{model.get('type')} with a {decoder.get('type')} decoder.")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [(s.get("type"), s.get("individual_digits")) for s in steps]
    if kinds == [("ByteLevel", None)] and steps[0].get("use_regex", True):
        pre_name = "gpt2"
    elif kinds == [("Digits", True), ("ByteLevel", None)] and steps[1].get("use_regex", True):
        pre_name = "smollm"  # llama.cpp's name for SmolLM's split: single digits, then GPT-2's regex
    else:
        raise TailorError(f"GGUF export does not know this tokenizer's pre-tokenizer ({pre}); "
                          "supported: GPT-2's byte-level split, optionally after splitting digits.")
    tokens: list[str | None] = [None] * vocab_size
    types = [int(gguf.TokenType.NORMAL)] * vocab_size
    for token, index in model["vocab"].items():
        if index >= vocab_size:
            raise TailorError(f"token {token!r} has id {index}, outside the model's vocabulary of {vocab_size}.")
        tokens[index] = token
    for added in spec.get("added_tokens") or []:
        index = added["id"]
        if index >= vocab_size:
            raise TailorError(f"added token {added['content']!r} has id {index}, outside the model's vocabulary of {vocab_size}.")
        tokens[index] = added["content"]
        types[index] = int(gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED)
    for index, token in enumerate(tokens):
        if token is None:  # the embedding matrix is larger than the vocabulary: filler rows
            tokens[index] = f"[PAD{index}]"
            types[index] = int(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre_name}


def write_gguf(model, tokenizer, out: str | Path, dtype: str = "f16", name: str = "") -> Path:
    """Write `model` (a LlamaForCausalLM) and `tokenizer` to the GGUF file `out`, atomically."""
    import gguf

    if dtype not in DTYPES:
        raise TailorError(f"GGUF weights dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    cfg = model.config
    if getattr(cfg, "model_type", None) != "llama":
        raise TailorError(f"GGUF export supports llama-family models; this one is '{getattr(cfg, 'model_type', '?')}'.")
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise TailorError(f"GGUF export does not support rope scaling '{rope.get('rope_type')}'.")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        raise TailorError("GGUF export does not support llama models with biases.")
    heads, kv_heads, layers = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_hidden_layers
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    vocab = _tokenizer_fields(tokenizer, cfg.vocab_size)
    out = Path(out)
    if out.suffix != ".gguf":
        raise TailorError(f"the GGUF file name should end in .gguf, got {out.name}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, "llama")
        w.add_name(name or out.stem)
        w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                         "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
        if dtype == "q8_0":
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(cfg.max_position_embeddings)
        w.add_embedding_length(cfg.hidden_size)
        w.add_block_count(layers)
        w.add_feed_forward_length(cfg.intermediate_size)
        w.add_head_count(heads)
        w.add_head_count_kv(kv_heads)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(float(theta))
        w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
        w.add_vocab_size(cfg.vocab_size)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(vocab["pre"])
        w.add_token_list(vocab["tokens"])
        w.add_token_types(vocab["types"])
        w.add_token_merges(vocab["merges"])
        for key, token_id in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                              ("unk", tokenizer.unk_token_id), ("pad", tokenizer.pad_token_id)):
            if token_id is not None:
                getattr(w, f"add_{key}_token_id")(int(token_id))
        probe = tokenizer("a")["input_ids"]
        w.add_add_bos_token(tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id])
        template = getattr(tokenizer, "chat_template", None)
        if isinstance(template, dict):
            template = template.get("default")
        if template:
            w.add_chat_template(template)
        _add_tensors(w, model, heads, kv_heads, layers, dtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _add_tensors(w, model, heads: int, kv_heads: int, layers: int, dtype: str) -> None:
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when the file has no output.weight
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise TailorError(f"GGUF export does not know where the tensor '{hf_name}' goes.")
        data = tensor.detach().to(torch.float32).numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _rotary_pairs(data, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _rotary_pairs(data, kv_heads)
        data = np.ascontiguousarray(data)
        if data.ndim == 1 or dtype == "f32":
            w.add_tensor(name, data.astype(np.float32))
        elif dtype == "q8_0" and data.shape[-1] % 32 == 0:
            packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, data.astype(np.float16))
