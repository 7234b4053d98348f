"""The jobs behind `tailor train` and `tailor run`, read top to bottom.

config -> run folder -> model + tokenizer -> data splits -> (base eval) -> train -> eval -> report
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

from tailor import device as devices
from tailor.config import Config, dump_config
from tailor.errors import TailorError
from tailor.fsutil import write_json, write_text
from tailor.models.load import context_length
from tailor.precision import use_half
from tailor.report import compare_run, comparison_table, write_report
from tailor.tasks import get_task
from tailor.train import distributed
from tailor.train.loop import train


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def check_run_dir(cfg: Config, resume: bool, overwrite: bool) -> None:
    run_dir = cfg.run_dir
    if run_dir.exists() and not resume and not overwrite:
        raise TailorError(
            f"run folder {run_dir} already exists. Use --resume to continue it, --overwrite to start "
            f"again, or set another name (name=...)."
        )
    if resume and not run_dir.exists():
        raise TailorError(f"--resume: run folder {run_dir} does not exist.")


def open_run(cfg: Config, resume: bool, overwrite: bool) -> Path:
    """Create (or reopen) the run folder; status.json says 'running' until the job completes.
    Under torchrun, rank 0 does this once every rank has checked the folder."""
    check_run_dir(cfg, resume, overwrite)
    run_dir = cfg.run_dir
    distributed.barrier()
    if distributed.is_main():
        if run_dir.exists() and not resume:
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", dump_config(cfg))
        write_json(run_dir / "status.json", {"status": "running", "started": now()})
    distributed.barrier()
    return run_dir


def finish_run(run_dir: Path, status: str, **extra) -> None:
    previous = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").is_file() else {}
    write_json(run_dir / "status.json", {**previous, "status": status, "finished": now(), **extra})


def setup(cfg: Config):
    task = get_task(cfg.task)
    model, tokenizer = task.load(cfg)
    splits = task.prepare(cfg, tokenizer, context_length(model))
    return model, tokenizer, splits


def guarded(run_dir: Path, job):
    """Run a job; on any failure mark the run folder failed, so it never looks complete."""
    if not distributed.is_main():  # under torchrun, rank 0 alone keeps status.json
        result = job()
        distributed.barrier()
        return result
    try:
        result = job()
        distributed.barrier()  # complete only once every rank is done
    except BaseException as e:
        finish_run(run_dir, "failed", error=f"{type(e).__name__}: {e}")
        raise
    finish_run(run_dir, "complete")
    return result


def train_job(cfg: Config, resume: bool = False, overwrite: bool = False, on_validation=None) -> dict:
    """Fine-tune into the run folder. Under `torchrun --nproc_per_node N` every process runs this and
    trains data-parallel (see tailor.train.distributed); rank 0 alone writes the run folder."""
    created_group = distributed.init(cfg.train.device)  # the device, and the process group under torchrun
    devices.check_precision(cfg.train.precision)
    check_run_dir(cfg, resume, overwrite)
    model, tokenizer, splits = setup(cfg)  # bad input fails here, before any run folder exists
    run_dir = open_run(cfg, resume, overwrite)
    main = distributed.is_main()

    def job():
        if main:
            write_json(run_dir / "data_stats.json", splits.stats)
        result = train(cfg, model, tokenizer, splits.train, splits.validation, run_dir, resume=resume,
                       on_validation=on_validation)
        summary = {"train": result.__dict__, "data": splits.stats, "world_size": distributed.world_size()}
        if main:
            write_json(run_dir / "train_summary.json", summary)
            print(f"report: {write_report(run_dir, finishing=True)}")
        return summary

    try:
        return guarded(run_dir, job)
    finally:
        if created_group:
            distributed.close()


def run_job(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict:
    """Evaluate the base model, fine-tune, evaluate the result, and compare them."""
    if distributed.launched():
        raise TailorError("`tailor run` runs in one process; under torchrun / accelerate launch use `tailor train`, "
                          "then `tailor eval` the run folder.")
    devices.choose(cfg.train.device)
    devices.check_precision(cfg.train.precision)
    check_run_dir(cfg, resume, overwrite)
    model, tokenizer, splits = setup(cfg)  # bad input fails here, before any run folder exists
    run_dir = open_run(cfg, resume, overwrite)

    def job():
        write_json(run_dir / "data_stats.json", splits.stats)
        print(f"data: {json.dumps(splits.stats['samples'])} samples; "
              f"{splits.stats['train_supervised_tokens']} of {splits.stats['train_tokens']} train tokens supervised")
        bf16 = use_half(cfg.train.precision)
        base_file = run_dir / "base_eval.json"
        if resume and base_file.is_file():
            base = json.loads(base_file.read_text())
        else:
            metrics, replies = get_task(cfg.task).evaluate(model, tokenizer, splits.test, cfg, bf16, "base")
            base = {"metrics": metrics, "replies": replies}
            write_json(base_file, base)

        result = train(cfg, model, tokenizer, splits.train, splits.validation, run_dir, resume=resume)
        tuned_model = get_task(cfg.task).load_trained(run_dir / "model", cfg)
        metrics, replies = get_task(cfg.task).evaluate(tuned_model, tokenizer, splits.test, cfg, bf16, "fine-tuned")
        tuned = {"metrics": metrics, "replies": replies}

        summary = {
            "test": {"base": base["metrics"], "fine_tuned": tuned["metrics"]},
            "train": result.__dict__,
            "data": splits.stats,
        }
        write_json(run_dir / "metrics.json", summary)
        write_json(run_dir / "samples.json", [
            {**get_task(cfg.task).sample_record(s), "base": b, "fine_tuned": f}
            for s, b, f in zip(splits.test, base["replies"], tuned["replies"])
        ])
        print()
        made = getattr(get_task(cfg.task), "OUTPUTS", "generated")  # what the task's replies are
        print(f"test split, {len(splits.test)} samples ({len(tuned['replies'])} {made}):")
        print(get_task(cfg.task).metrics_table({"base": base["metrics"], "fine-tuned": tuned["metrics"]}))
        print(f"\ntraining: {result.steps} steps, best validation loss {result.best_val_loss:.4f} at step "
              f"{result.best_step}, {result.tokens_per_second:.0f} tokens/s, {result.seconds:.0f} s")
        print()
        print(get_task(cfg.task).side_by_side(splits.test, {"base": base["replies"], "fine-tuned": tuned["replies"]}, cfg.eval.show_samples))
        comparison = compare_run(run_dir)  # paired bootstrap over the generated test prompts
        if comparison:
            print(f"\nbase vs fine-tuned on the {comparison['samples']} {made} test samples:")
            print(comparison_table(comparison["metrics"], "base", "fine-tuned", comparison["confidence"]))
        print(f"\nreport: {write_report(run_dir, finishing=True)}")
        print(f"run folder: {run_dir}  (chat with it: tailor chat {run_dir})")
        return summary

    return guarded(run_dir, job)

