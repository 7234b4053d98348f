"""Reopen a finished run (or a model folder) from disk alone: its model, tokenizer and config."""

from __future__ import annotations

from pathlib import Path

from tailor.config import Config, config_from_dict, read_yaml
from tailor.errors import TailorError
from tailor.models.load import load_tokenizer


def model_folder(path: str | Path) -> Path:
    path = Path(path)
    if (path / "model" / "config.json").is_file():
        return path / "model"
    if (path / "config.json").is_file():
        return path
    raise TailorError(f"{path} is neither a run folder with a model/ inside nor a model folder.")


def require_safetensors(folder: Path) -> None:
    """Run folders hold safetensors only; a pickled checkpoint can run code when loaded, so refuse it."""
    if not any(folder.glob("*.safetensors")):
        raise TailorError(f"{folder} holds no .safetensors weights; tailor does not load pickled (.bin/.pt) weights.")


def load_run(path: str | Path, dtype: str = "float32") -> tuple[Config, object, object]:
    folder = model_folder(path)
    require_safetensors(folder)
    cfg_file = folder / "tailor.yaml"
    cfg = config_from_dict(read_yaml(cfg_file), str(cfg_file)) if cfg_file.is_file() else Config()
    from dataclasses import replace

    from tailor.tasks import get_task

    # The task's own loader: a causal LM, an encoder-decoder or a classifier, as the run trained it.
    return cfg, get_task(cfg.task).load_trained(folder, replace(cfg, model=replace(cfg.model, dtype=dtype))), load_tokenizer(str(folder))


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
