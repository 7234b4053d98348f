"""Experiment tracking beside log.jsonl: TensorBoard event files and MLflow runs (train.report_to).

Both take the same records log.jsonl gets (one per logged step and per validation), through the
libraries' own writers: torch's SummaryWriter writes runs/<name>/tensorboard/, and MLflow logs to a
local store (train.tracking_uri; default a SQLite file, mlflow.db, in the output folder) a run with
the resolved config as flattened parameters, every metric per step, and at the end the report and
the kept model as artifacts. Only rank 0 tracks. A missing package stops the run before it starts,
naming the pip command.
"""

from __future__ import annotations

import math
from pathlib import Path

from tailor.config.train import TRACKERS as CHOICES
from tailor.errors import TailorError

INSTALL = {"tensorboard": "pip install tensorboard", "mlflow": "pip install mlflow-skinny"}


def check(report_to: list[str]) -> None:
    """Known names, and their packages importable (before any run folder exists)."""
    for name in report_to:
        if name not in CHOICES:
            raise TailorError(f"train.report_to: '{name}' is not one of {', '.join(CHOICES)}.")
        module = {"tensorboard": "tensorboard", "mlflow": "mlflow"}[name]
        try:
            __import__(module)
        except ImportError:
            raise TailorError(f"train.report_to {name} needs the {module} package: {INSTALL[name]}") from None


def flatten(data: dict, prefix: str = "") -> dict[str, str]:
    """{"train": {"learning_rate": 1e-4}} -> {"train.learning_rate": "0.0001"} (MLflow's parameters)."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)[:6000]  # MLflow's limit for one parameter's value
    return out


def numbers(record: dict) -> dict[str, float]:
    """The finite numeric fields of a log record, keyed split/name (train/loss, validation/perplexity)."""
    split = record.get("split", "train")
    return {f"{split}/{k}": float(v) for k, v in record.items()
            if k not in ("step", "split") and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v))}


class Trackers:
    """The run's trackers; `log` takes log.jsonl's records, `finish` adds the artifacts and closes them."""

    def __init__(self, report_to: list[str], run_dir: Path, config: dict, name: str, tracking_uri: str = "",
                 parent_run_id: str | None = None):
        self.tensorboard = self.mlflow = None
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if "mlflow" in report_to:
            import logging

            import mlflow

            for noisy in ("mlflow", "alembic"):  # their INFO lines (creating tables...) would cut the progress bar
                logging.getLogger(noisy).setLevel(logging.WARNING)

            self.mlflow = mlflow.MlflowClient(tracking_uri=tracking_uri or default_uri(run_dir))
            experiment = self.mlflow.get_experiment_by_name("tailor")
            # Artifacts beside the store, not in an mlruns/ of whatever folder tailor was started from.
            experiment_id = experiment.experiment_id if experiment else self.mlflow.create_experiment(
                "tailor", artifact_location=(run_dir.parent / "mlflow-artifacts").resolve().as_uri())
            tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
            self.run_id = self.mlflow.create_run(experiment_id, run_name=name, tags=tags).info.run_id
            for key, value in flatten(config).items():
                self.mlflow.log_param(self.run_id, key, value)

    def log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        values = numbers(record)
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.mlflow is not None:
            for key, value in values.items():
                self.mlflow.log_metric(self.run_id, key, value, step=step)

    def finish(self, run_dir: Path, status: str = "FINISHED") -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow is not None:
            for name in ("report.html", "metrics.json"):
                if (run_dir / name).is_file():
                    self.mlflow.log_artifact(self.run_id, str(run_dir / name))
            if (run_dir / "model").is_dir():
                self.mlflow.log_artifacts(self.run_id, str(run_dir / "model"), artifact_path="model")
            self.mlflow.set_terminated(self.run_id, status=status)


def default_uri(run_dir: Path) -> str:
    """A SQLite store in the output folder (runs/mlflow.db): every run of the project in one place."""
    return f"sqlite:///{(run_dir.parent / 'mlflow.db').resolve()}"


def parent_run(store_dir: Path, name: str, tracking_uri: str = "") -> str:
    """The MLflow run a search's trials nest under, one per study: made by the first worker that asks, its id
    kept in `store_dir/mlflow-parent-run` (created exclusively, so parallel workers share one)."""
    import os

    import mlflow

    marker = store_dir / "mlflow-parent-run"
    if marker.is_file():
        return marker.read_text().strip()
    store_dir.mkdir(parents=True, exist_ok=True)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri or default_uri(store_dir / "trial"))
    experiment = client.get_experiment_by_name("tailor")
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "tailor", artifact_location=(store_dir / "mlflow-artifacts").resolve().as_uri())
    run_id = client.create_run(experiment_id, run_name=name).info.run_id
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another worker was first: use its run, drop this one
        client.delete_run(run_id)
        return marker.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(run_id + "\n")
    return run_id
