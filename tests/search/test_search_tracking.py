"""A search with train.report_to mlflow: each trial is an MLflow run nested under the study's run."""

import mlflow

from tailor.config import load_config
from tailor.search.study import search_dir, search_job
from tailor.train.tracking import default_uri


def test_trials_are_nested_mlflow_runs_under_the_study(tiny_config):
    space = {"train.learning_rate": [1e-3, 3e-3]}
    train = {"max_steps": 2, "eval_every": 2, "save_every": 0, "report_to": ["mlflow"]}
    cfg = load_config(tiny_config(train=train, search={"space": space, "sampler": "grid", "pruner": "none"}))
    search_job(cfg, trials=2)
    trials = search_dir(cfg) / "trials"
    client = mlflow.MlflowClient(tracking_uri=default_uri(trials / "trial-0000"))
    runs = client.search_runs([client.get_experiment_by_name("tailor").experiment_id])
    parent = (trials / "mlflow-parent-run").read_text().strip()
    children = [r for r in runs if r.info.run_id != parent]
    assert sorted(r.info.run_name for r in children) == ["trial-0000", "trial-0001"]
    assert all(r.data.tags.get("mlflow.parentRunId") == parent for r in children)
    assert {r.data.params["train.learning_rate"] for r in children} == {"0.001", "0.003"}
