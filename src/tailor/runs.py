"""The one reader of run folders: eval, generate, chat, compare, serve and export open a run here.

A run folder keeps its best model in model/: config.json and safetensors weights (a LoRA run's adapter
merged in, the adapter itself in adapter/), or a peft adapter naming its base model; beside the weights,
tailor.yaml holds the run's resolved config (or config.yaml in the run folder). A model folder stands for
itself, and where names are allowed (generate, compare) so does a model name (`smollm2-135m-instruct`, a
.gguf file, a hub id).

Weights are only ever read from safetensors: a folder holding only pickled weights (pytorch_model.bin,
adapter_model.bin, *.pt) is refused, since unpickling runs arbitrary code.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path

from tailor.config import Config, config_from_dict, parse_yaml, shorthand
from tailor.config.base import build
from tailor.data.files import read_text
from tailor.errors import TailorError

CLASSIFIER_SUFFIX = "ForSequenceClassification"


@dataclass
class Loaded:
    name: str  # the run's name, the model folder's, or the model name given
    folder: Path | None  # where the weights came from (runs/<name>/model or the folder given); None for a name
    cfg: Config  # the run's settings; without a config file, the defaults with this model as model.name
    config_yaml: str  # the config file as written ("" when none): export carries it verbatim
    model: object
    tokenizer: object
    kind: str  # "generate" (a causal LM), "classify" (a sequence classifier) or "seq2seq" (an encoder-decoder)
    is_run: bool  # cfg came from a config file (a run folder, or a model folder with tailor.yaml)

    @property
    def settings(self) -> Config | None:
        """The run's config, or None when there is none (an exported Modelfile then keeps Ollama's defaults)."""
        return self.cfg if self.is_run else None


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


def require_safetensors(folder: Path, stem: str = "model") -> None:
    """Refuse a folder without `stem`*.safetensors: a pickled checkpoint can run code when loaded."""
    if any(folder.glob(f"{stem}*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    found = f" (it holds {', '.join(pickled)}: convert them to safetensors)" if pickled else ""
    raise TailorError(f"{folder} holds no .safetensors weights ({stem}*.safetensors); tailor does not load "
                      f"pickled weights{found}.")


def run_config(folder: Path, strict: bool = True) -> tuple[Config | None, str]:
    """(the run's config, its text) for a model folder: its tailor.yaml, or the run folder's config.yaml beside
    model/ or adapter/; (None, "") when there is none. strict=False (serve, export, doctor): a config another
    tailor version wrote keeps the settings this version reads, the rest at their defaults."""
    file = folder / "tailor.yaml"
    if not file.is_file() and folder.name in ("model", "adapter"):
        file = folder.parent / "config.yaml"
    if not file.is_file():
        return None, ""
    text = read_text(file, "config file")
    data = parse_yaml(text, str(file)) or {}
    if not isinstance(data, dict):
        raise TailorError(f"{file}: the top level must be a mapping of settings.")
    try:
        return config_from_dict(data, str(file)), text
    except TailorError:
        if strict:
            raise
        return _tolerant(Config, shorthand(data)), text


def _tolerant(cls: type, data: dict):
    """`cls` from the settings of `data` that are valid on their own, section by section; the rest default."""
    hints, kept = typing.get_type_hints(cls), {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            continue
        value = data[field.name]
        if dataclasses.is_dataclass(hints[field.name]) and isinstance(value, dict):
            kept[field.name] = _tolerant(hints[field.name], value)
            continue
        try:
            kept[field.name] = getattr(build(cls, {field.name: value}), field.name)
        except TailorError:
            pass
    try:
        return cls(**kept)
    except TailorError:
        return cls()


def model_kind(source: str) -> str:
    """"classify", "seq2seq" or "generate", from the model's config (config.json)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise TailorError(f"could not read the config of model '{source}': {e}") from None
    if any(a.endswith(CLASSIFIER_SUFFIX) for a in config.architectures or []):
        return "classify"
    return "seq2seq" if getattr(config, "is_encoder_decoder", False) else "generate"


def load_weights(source: str | Path, dtype: str = "float32") -> tuple[object, str]:
    """(model, kind) of a model folder or hub id, with the loader its kind needs, on this process's device."""
    from tailor.models.heads import load_classifier
    from tailor.models.load import load_model
    from tailor.models.seq2seq import load_seq2seq

    if Path(source).is_dir():
        require_safetensors(Path(source))
    kind = model_kind(str(source))
    if kind == "classify":
        return load_classifier(str(source), None, None, dtype), kind
    return (load_seq2seq if kind == "seq2seq" else load_model)(str(source), dtype), kind


def merged_adapter(folder: Path, dtype: str) -> tuple[object, str, str]:
    """(base model with the peft adapter in `folder` merged in, its kind, where the base came from)."""
    from peft import PeftModel

    from tailor import device as devices
    from tailor.models.load import resolve

    adapter = json.loads((folder / "adapter_config.json").read_text())
    base_name = adapter.get("base_model_name_or_path")
    if not base_name:
        raise TailorError(f"{folder / 'adapter_config.json'} does not name its base model (base_model_name_or_path).")
    if adapter.get("task_type") not in (None, "CAUSAL_LM"):
        raise TailorError(f"{folder} is a {adapter.get('task_type')} adapter; only causal-LM adapters can be merged "
                          "here (a classification run keeps its merged model in model/).")
    require_safetensors(folder, "adapter_model")
    base_source = resolve(base_name)  # a hub id needs the network, as the adapter asks for it
    base, kind = load_weights(base_source, dtype)
    return devices.place(PeftModel.from_pretrained(base, folder).merge_and_unload()), kind, base_source


def load(spec: str | Path, dtype: str = "float32", names: bool = False, strict: bool = True) -> Loaded:
    """A run folder, model folder or adapter folder (any adapter merged in); with `names`, also a model name.
    `strict`: see run_config."""
    from tailor.models.load import load_tokenizer, resolve

    path = Path(spec)
    if names and (not path.exists() or str(spec).endswith(".gguf")):
        source = resolve(str(spec))
        model, kind = load_weights(source, dtype)
        return Loaded(str(spec), None, _defaults(str(spec)), "", model.eval(), load_tokenizer(source), kind, False)
    folder = model_folder(path)
    cfg, text = run_config(folder, strict)  # a bad config stops before the weights are read
    if (folder / "config.json").is_file():
        model, kind = load_weights(folder, dtype)
        tokenizer_source = str(folder)
    else:
        model, kind, base_source = merged_adapter(folder, dtype)
        tokenizer_source = str(folder) if (folder / "tokenizer_config.json").is_file() else base_source
    name = folder.parent.name if folder.name in ("model", "adapter") else folder.name
    return Loaded(name, folder, cfg or _defaults(str(folder)), text, model.eval(), load_tokenizer(tokenizer_source),
                  kind, cfg is not None)


def load_run(path: str | Path, dtype: str = "float32") -> tuple[Config, object, object]:
    """(config, model, tokenizer) of a run or model folder: `load` as a tuple (benchmarks/gpu_check.sh uses it)."""
    loaded = load(path, dtype)
    return loaded.cfg, loaded.model, loaded.tokenizer


def _defaults(model_name: str) -> Config:
    """Default settings for a model that comes without a run's config: model.name is that model."""
    cfg = Config()
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=model_name))


def run_status(run_dir: str | Path) -> dict:
    """status.json as it should be read: a run still marked 'running' whose process (pid, on this host) is
    gone was killed (SIGKILL, a lost machine) and is reported 'interrupted'; {} when there is no status.json."""
    import socket

    from tailor.fsutil import pid_alive, read_json

    status = read_json(Path(run_dir) / "status.json")
    pid, host = status.get("pid"), status.get("host")
    if status.get("status") == "running" and isinstance(pid, int) and host == socket.gethostname() \
            and not pid_alive(pid):
        return {**status, "status": "interrupted"}
    return status
