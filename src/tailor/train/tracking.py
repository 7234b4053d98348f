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
import time
from pathlib import Path

from tailor.config.base import flat
from tailor.errors import TailorError

INSTALL = {"tensorboard": "pip install tensorboard", "mlflow": "pip install mlflow-skinny"}


def check(report_to: list[str]) -> None:
    """The trackers' packages are importable (the names were checked with the config), before any run folder."""
    for name in report_to:
        try:
            __import__(name)
        except ImportError:
            raise TailorError(f"train.report_to {name} needs the {name} package: {INSTALL[name]}") from None


def params(config: dict) -> dict[str, str]:
    """The resolved config as MLflow parameters: dotted keys, values as text within MLflow's length limit."""
    return {key: str(value)[:6000] for key, value in flat(config).items()}


def experiment(client, store_dir: Path) -> str:
    """The id of MLflow's 'tailor' experiment in the client's store, made on first use with its artifacts
    beside the store (not in an mlruns/ of whatever folder tailor was started from)."""
    found = client.get_experiment_by_name("tailor")
    if found is not None:
        return found.experiment_id
    return client.create_experiment("tailor", artifact_location=(store_dir / "mlflow-artifacts").resolve().as_uri())


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

            from mlflow.entities import Param

            self.mlflow = mlflow.MlflowClient(tracking_uri=tracking_uri or default_uri(run_dir))
            tags = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
            self.run_id = self.mlflow.create_run(experiment(self.mlflow, run_dir.parent), run_name=name,
                                                 tags=tags).info.run_id
            items = [Param(key, value) for key, value in params(config).items()]
            for start in range(0, len(items), 100):  # one write per 100 (MLflow's batch limit), not one per setting
                self.mlflow.log_batch(self.run_id, params=items[start:start + 100])

    def log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        values = numbers(record)
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
            self.tensorboard.flush()
        if self.mlflow is not None and values:
            from mlflow.entities import Metric

            stamp = int(time.time() * 1000)
            self.mlflow.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v in values.items()])

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
    run_id = client.create_run(experiment(client, store_dir), run_name=name).info.run_id
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another worker was first: use its run, drop this one
        client.delete_run(run_id)
        return marker.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(run_id + "\n")
    return run_id
