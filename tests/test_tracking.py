"""train.report_to: TensorBoard events and an MLflow run hold exactly what log.jsonl holds, read back with
the tools' own readers (EventAccumulator, MlflowClient); the MLflow run has the config and the artifacts."""

import pytest

from conftest import read_jsonl
from tailor.config import load_config
from tailor.errors import TailorError
from tailor.train.tracking import default_uri
from tailor.workflow import train_job


def test_tensorboard_and_mlflow_read_back_equal_log_jsonl(tiny_config):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(tiny_config(train={"max_steps": 4, "eval_every": 2, "report_to": ["tensorboard", "mlflow"]}))
    train_job(cfg)
    log = read_jsonl(cfg.run_dir / "log.jsonl")
    train = [r for r in log if r["split"] == "train"]
    val = [r for r in log if r["split"] == "validation"]

    events = EventAccumulator(str(cfg.run_dir / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in train]
    assert [e.step for e in events.Scalars("validation/perplexity")] == [r["step"] for r in val]

    client = mlflow.MlflowClient(tracking_uri=default_uri(cfg.run_dir))
    run = client.search_runs([client.get_experiment_by_name("tailor").experiment_id])[0]
    assert run.info.run_name == cfg.name and run.info.status == "FINISHED"
    assert run.data.params["train.learning_rate"] == str(cfg.train.learning_rate)
    assert run.data.params["model.name"] == cfg.model.name
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (r["step"], pytest.approx(r["loss"])) for r in train]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "model"} <= artifacts


def test_an_unknown_tracker_is_named(tiny_config):
    with pytest.raises(TailorError, match="report_to: 'wandb' is not one of tensorboard, mlflow"):
        load_config(tiny_config(train={"report_to": ["wandb"]}))
