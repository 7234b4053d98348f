"""`tailor run` scores the kept model read back from the run folder after training: the trained model is gone
by then, so the two are not held together (0.5 GB more at SmolLM2-135M's size)."""

import weakref

from tailor import workflow
from tailor.config import load_config


def test_the_trained_model_is_freed_before_the_fine_tuned_evaluation(tiny_config, monkeypatch):
    trained, seen = [], []
    real_setup, real_finish = workflow.checked_setup, workflow.finish_run_job

    def setup(*args, **kwargs):
        task, model, tokenizer, splits = real_setup(*args, **kwargs)
        trained.append(weakref.ref(model))
        return task, model, tokenizer, splits

    def finish(*args, **kwargs):  # no gc.collect(): the model must go by its last reference
        seen.append(trained[0]() is None)
        return real_finish(*args, **kwargs)

    monkeypatch.setattr(workflow, "checked_setup", setup)
    monkeypatch.setattr(workflow, "finish_run_job", finish)
    summary = workflow.run_job(load_config(tiny_config(train={"max_steps": 2, "eval_every": 0, "save_every": 0})))
    assert seen == [True]
    assert summary["test"]["fine_tuned"]  # and the fine-tuned model was still scored
