"""Open a run's model as one standalone model, and write it as a plain Hugging Face folder.

A run keeps its best model in runs/<name>/model/. That folder is either a full model (config.json
and safetensors weights; for LoRA runs the adapter already merged in, with the adapter itself in
runs/<name>/adapter/) or, for adapter-only runs, a peft adapter (adapter_config.json) that names
its base model. Either way `load_standalone` returns one ordinary model with any adapter merged.

Weights are only ever read from safetensors: a folder holding only pickled weights
(pytorch_model.bin, adapter_model.bin) is refused, since unpickling runs arbitrary code.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from tailor import device as devices
from tailor.errors import TailorError
from tailor.fsutil import write_dir

CLASSIFIER_SUFFIX = "ForSequenceClassification"


@dataclass
class Standalone:
    model: object
    tokenizer: object
    folder: Path  # the folder the model came from (runs/<name>/model or the path given)
    kind: str  # "generate" (a causal LM), "classify" (a sequence classifier) or "seq2seq" (an encoder-decoder)
    config_yaml: str  # the run's tailor.yaml ("" when the folder has none)
    name: str  # a short name for the model: the run's name or the folder's


def model_folder(path: str | Path) -> Path:
    """runs/<name> -> runs/<name>/model; a model or adapter folder stands for itself."""
    path = Path(path)
    if not path.exists():
        raise TailorError(f"{path} does not exist.")
    for candidate in (path / "model", path):
        if (candidate / "config.json").is_file() or (candidate / "adapter_config.json").is_file():
            return candidate
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    raise TailorError(f"{path} is neither a run folder with a model/ inside nor a model or adapter folder.")


def _require_safetensors(folder: Path, stem: str) -> None:
    if any(folder.glob(f"{stem}*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    hint = f" It holds pickled weights ({', '.join(pickled)}), which tailor never loads: convert them to safetensors." if pickled else ""
    raise TailorError(f"{folder} has no {stem}*.safetensors weights.{hint}")


def _model_class(config_file: Path):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification

    config = json.loads(config_file.read_text())
    architectures = config.get("architectures") or []
    if any(a.endswith(CLASSIFIER_SUFFIX) for a in architectures):
        return AutoModelForSequenceClassification, "classify"
    if config.get("is_encoder_decoder"):
        return AutoModelForSeq2SeqLM, "seq2seq"
    return AutoModelForCausalLM, "generate"


def _load_full(folder: Path, dtype: str):
    cls, kind = _model_class(folder / "config.json")
    _require_safetensors(folder, "model")
    try:
        model = cls.from_pretrained(folder, dtype=getattr(torch, dtype), use_safetensors=True)
    except (OSError, ValueError) as e:
        raise TailorError(f"could not load the model in {folder}: {e}") from None
    return devices.place(model), kind


def _load_adapter(folder: Path, dtype: str):
    from peft import PeftModel

    from tailor.models.load import resolve

    adapter = json.loads((folder / "adapter_config.json").read_text())
    base_name = adapter.get("base_model_name_or_path")
    if not base_name:
        raise TailorError(f"{folder / 'adapter_config.json'} does not name its base model (base_model_name_or_path).")
    if adapter.get("task_type") not in (None, "CAUSAL_LM"):
        raise TailorError(f"{folder} is a {adapter.get('task_type')} adapter; only causal-LM adapters can be merged "
                          "here (a classification run keeps its merged model in model/).")
    _require_safetensors(folder, "adapter_model")
    base_folder = Path(resolve(base_name))
    base, kind = _load_full(base_folder, dtype) if base_folder.is_dir() else (None, "generate")
    if base is None:  # a hub id: loading it needs the network, as the adapter asks for it
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(base_name, dtype=getattr(torch, dtype), use_safetensors=True)
    merged = devices.place(PeftModel.from_pretrained(base, folder).merge_and_unload())
    return merged, kind, base_folder


def load_standalone(path: str | Path, dtype: str = "float32") -> Standalone:
    """The run's model with any adapter merged in, its tokenizer and its tailor.yaml."""
    from tailor.models.load import load_tokenizer

    folder = model_folder(path)
    if (folder / "config.json").is_file():
        model, kind = _load_full(folder, dtype)
        tokenizer_source = folder
    else:
        model, kind, base_folder = _load_adapter(folder, dtype)
        tokenizer_source = folder if (folder / "tokenizer_config.json").is_file() else base_folder
    model.eval()
    tokenizer = load_tokenizer(str(tokenizer_source))
    config_yaml = ""
    if (folder / "tailor.yaml").is_file():
        config_yaml = (folder / "tailor.yaml").read_text()
    elif folder.name in ("model", "adapter") and (folder.parent / "config.yaml").is_file():
        config_yaml = (folder.parent / "config.yaml").read_text()  # the run's resolved config
    name = folder.parent.name if folder.name in ("model", "adapter") else folder.name
    return Standalone(model, tokenizer, folder, kind, config_yaml, name)


def export_merged(run: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the run's model (adapter merged in) as a plain Hugging Face folder at `out`."""
    out = Path(out)
    source = model_folder(run)
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise TailorError(f"the output {out} would overwrite the run's own model folder {source}; choose another path.")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise TailorError(f"{out} already exists; pass --overwrite to replace it.")
    loaded = load_standalone(run)

    def fill(tmp: Path) -> None:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        if loaded.config_yaml:
            (tmp / "tailor.yaml").write_text(loaded.config_yaml)
        for extra in ("metrics.json", "README.md"):  # the model card travels with the model
            if (source / extra).is_file():
                shutil.copyfile(source / extra, tmp / extra)

    return write_dir(out, fill)
