"""Write a run's model as one standalone Hugging Face folder, any LoRA adapter merged in.

The run is opened by the one run-folder reader (tailor.runs.load), which reads safetensors only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tailor.errors import TailorError
from tailor.fsutil import write_dir
from tailor.runs import load, model_folder


def export_merged(run: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Write the run's model (adapter merged in) as a plain Hugging Face folder at `out`."""
    out = Path(out)
    source = model_folder(run)
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise TailorError(f"the output {out} would overwrite the run's own model folder {source}; choose another path.")
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise TailorError(f"{out} already exists; pass --overwrite to replace it.")
    loaded = load(run, strict=False)

    def fill(tmp: Path) -> None:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        if loaded.config_yaml:
            (tmp / "tailor.yaml").write_text(loaded.config_yaml)
        for extra in ("metrics.json", "README.md"):  # the model card travels with the model
            if (source / extra).is_file():
                shutil.copyfile(source / extra, tmp / extra)

    return write_dir(out, fill)
