"""Write a causal LM (llama, qwen2 or gpt2 family) as one GGUF file, tokenizer and chat template included.

The file follows llama.cpp's conventions (as its converter, convert_hf_to_gguf.py, writes them), so
llama.cpp-based runtimes (llama.cpp, Ollama, LM Studio) and transformers' GGUF loader
(`from_pretrained(folder, gguf_file=name)`) read it:
- hyperparameters under `<arch>.*`, tensors under llama.cpp's names and layouts (gguf_families);
- a byte-level BPE tokenizer as `tokenizer.ggml.model = "gpt2"` with llama.cpp's name for its
  pre-tokenizer split, token types, merges, special ids and `tokenizer.chat_template` (gguf_vocab);
- the chat template's end-of-turn token (e.g. `<|im_end|>`) as both `eot_token_id` and `eos_token_id`,
  so runtimes stop at the end of the assistant's reply.
Weights are written as f32, f16 or q8_0 (matrices only; norms and biases stay f32).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from tailor.errors import TailorError
from tailor.export import gguf_families, gguf_vocab

DTYPES = ("f32", "f16", "q8_0")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_gguf(model, tokenizer, out: str | Path, dtype: str = "f16", name: str = "") -> Path:
    """Write `model` and `tokenizer` to the GGUF file `out`, atomically, readable like any new file."""
    import gguf

    if dtype not in DTYPES:
        raise TailorError(f"GGUF weights dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    cfg = model.config
    kind = gguf_families.family(cfg)
    vocab = gguf_vocab.vocab_fields(tokenizer, cfg.vocab_size)
    special = gguf_vocab.special_ids(tokenizer)
    out = Path(out)
    if out.suffix != ".gguf":
        raise TailorError(f"the GGUF file name should end in .gguf, got {out.name}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # mkstemp makes the file private (0600); a runtime running as another user (an Ollama
        # service) must be able to read it, so give it the mode a plain new file would get.
        os.chmod(tmp, 0o666 & ~_umask())
        w = gguf.GGUFWriter(tmp, kind)
        w.add_name(name or out.stem)
        w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                         "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
        if dtype == "q8_0":
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        gguf_families.add_hyperparameters(w, cfg, kind)
        w.add_vocab_size(cfg.vocab_size)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(vocab.pre)
        w.add_token_list(vocab.tokens)
        w.add_token_types(vocab.types)
        w.add_token_merges(vocab.merges)
        for key, token_id in (("bos", special.bos), ("eos", special.eos), ("eot", special.eot),
                              ("unk", special.unk), ("pad", special.pad)):
            if token_id is not None:
                getattr(w, f"add_{key}_token_id")(int(token_id))
        w.add_add_bos_token(special.add_bos)
        w.add_add_eos_token(False)
        template = gguf_vocab.chat_template(tokenizer)
        if template:
            w.add_chat_template(template)
        for tensor_name, data in gguf_families.tensors(model, kind):
            _add_tensor(w, tensor_name, data, dtype)
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


def _add_tensor(w, name: str, data: np.ndarray, dtype: str) -> None:
    import gguf

    if data.ndim == 1 or dtype == "f32":
        w.add_tensor(name, data.astype(np.float32))
    elif dtype == "q8_0" and data.shape[-1] % 32 == 0:  # q8_0 packs rows in blocks of 32
        packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        w.add_tensor(name, data.astype(np.float16))
