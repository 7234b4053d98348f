"""The jobs behind `tailor train` and `tailor run`, read top to bottom.

config -> run folder -> model + tokenizer -> data splits -> (base eval) -> train -> eval -> report
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

import yaml

from tailor import device as devices
from tailor.allocator import release_freed_memory
from tailor.config import Config, dump_config
from tailor.config.base import flat, to_dict
from tailor.errors import TailorError
from tailor.eval.compare import length_caveats
from tailor.export.model_card import write_card
from tailor.fsutil import recover, write_json, write_text
from tailor.models.load import context_length
from tailor.tasks.splits import made_afresh
from tailor.precision import use_half
from tailor.report import compare_run, comparison_table, write_report
from tailor.report.plan import Eta, sample_tokens, schedule, scoring_tokens, validation_generated
from tailor.runs import load_weights
from tailor.tasks import Task, get_task
from tailor.train import distributed, tracking
from tailor.train.loop import train


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


LOCK = "run.lock"  # held (fcntl) by the job using the run folder; the kernel drops it when the process dies
# What may change between a run and its --resume without breaking exact resume: how long it trains, and
# what it logs, saves, validates and evaluates (not the metric the best model is chosen by).
# train.strategy and train.deepspeed are left to the checkpoint loader, which names a strategy the checkpoint
# cannot be resumed with (one process and DDP train alike, so switching between them keeps resume exact).
RESUMABLE = ("name", "output_dir", "train.max_steps", "train.epochs", "train.save_every", "train.log_every",
             "train.eval_every", "train.patience", "train.threads", "eval", "decode", "search",
             "train.strategy", "train.deepspeed")  # each a setting, or a section with all inside it
KEPT = ("eval.metric", "eval.mode")  # the checkpoint's best-so-far is a value of this metric
_held: dict[Path, object] = {}  # run folder -> its open, locked lock file


def check_name(name: str, what: str = "name") -> None:
    """A run name is one plain path component: `..`, `a/b` or an absolute path would put the run folder (and
    what --overwrite deletes) outside output_dir."""
    if not name or name in (".", "..") or "/" in name or (os.altsep and os.altsep in name) or "\0" in name:
        raise TailorError(f"{what} must be one plain folder name (no '/', not '.' or '..'), got {name!r}.")


def is_run_folder(path: Path) -> bool:
    """A folder tailor made for a run: its status.json is tailor's. --overwrite deletes nothing else."""
    try:
        status = json.loads((path / "status.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(status, dict) and "status" in status and "started" in status


def others(run_dir: Path) -> list[Path]:
    """What the run folder holds besides its lock file."""
    return [e for e in run_dir.iterdir() if e.name != LOCK]


def check_run_dir(cfg: Config, resume: bool, overwrite: bool) -> None:
    check_name(cfg.name)
    run_dir = cfg.run_dir
    if run_dir.exists() and not resume and not overwrite:
        raise TailorError(
            f"run folder {run_dir} already exists. Use --resume to continue it, --overwrite to start "
            f"again, or set another name (name=...)."
        )
    if resume and not run_dir.exists():
        raise TailorError(f"--resume: run folder {run_dir} does not exist.")
    if overwrite and not resume and run_dir.exists() and not run_dir.is_dir():
        raise TailorError(f"--overwrite: {run_dir} is not a folder; tailor deletes only run folders it made.")
    if overwrite and not resume and run_dir.is_dir() and others(run_dir) and not is_run_folder(run_dir):
        raise TailorError(f"--overwrite: {run_dir} is not a tailor run folder (no tailor status.json inside); "
                          "tailor deletes only run folders it made. Set another name (name=...).")
    if resume:
        check_resumable(run_dir, cfg)


def check_resumable(run_dir: Path, cfg: Config) -> None:
    """--resume continues the checkpoint exactly: the optimizer's learning rate, the data order and position
    come from the run's own settings. Refuse a config that changes them rather than silently mixing both."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    old, new = flat(yaml.safe_load(saved.read_text()) or {}), flat(yaml.safe_load(dump_config(cfg)) or {})
    # Settings only one side knows come from another tailor version (a new setting at its default): not a change.
    changed = [k for k in sorted(old.keys() & new.keys())
               if old[k] != new[k] and (k in KEPT or not any(k == r or k.startswith(r + ".") for r in RESUMABLE))]
    if changed:
        details = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed[:8])
        raise TailorError(f"--resume: the config changes settings the checkpoint in {run_dir} depends on ({details}). "
                          f"Resume with the run's own settings ({saved}); only {', '.join(RESUMABLE[2:8])} and the "
                          "eval/decode settings may change. To train with the new settings, start a new run (name=...).")


def lock_run(run_dir: Path) -> None:
    """Hold the run folder's lock for the life of the job: a second job on the same run is refused."""
    f = open(run_dir / LOCK, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        holder = {}
        try:
            holder = json.loads((run_dir / "status.json").read_text())
        except (OSError, ValueError):
            pass
        raise TailorError(f"run folder {run_dir} is in use by another tailor job (pid {holder.get('pid', '?')} on "
                          f"{holder.get('host', '?')}); wait for it to end or set another name (name=...).") from None
    _held[run_dir] = f


def unlock_run(run_dir: Path) -> None:
    f = _held.pop(run_dir, None)
    if f is not None:
        f.close()  # closing drops the flock


def clear_run_dir(run_dir: Path) -> None:
    """--overwrite: empty a run folder tailor made, keeping the lock file this job holds."""
    for entry in others(run_dir):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def open_run(cfg: Config, resume: bool, overwrite: bool) -> Path:
    """Create (or reopen) the run folder, locked for this job; status.json says 'running' (with this
    process's pid and host) until the job completes. Under torchrun, rank 0 does this once every rank has
    checked the folder."""
    check_run_dir(cfg, resume, overwrite)
    run_dir = cfg.run_dir
    distributed.barrier()  # every rank has checked the folder before rank 0 makes or changes it
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_run(run_dir)
        try:
            if not resume:  # checked again, now that no other job can change the folder
                if others(run_dir) and not overwrite:
                    raise TailorError(f"run folder {run_dir} already exists (made by another job just now).")
                if others(run_dir) and not is_run_folder(run_dir):
                    raise TailorError(f"--overwrite: {run_dir} is not a tailor run folder; tailor deletes only "
                                      "run folders it made.")
                clear_run_dir(run_dir)
            else:
                recover(run_dir)  # model/ or adapter/ moved aside by a killed writer, its temporary folders
            # status.json first: a folder holding it is tailor's, which --overwrite relies on.
            write_json(run_dir / "status.json", {"status": "running", "started": now(), "pid": os.getpid(),
                                                 "host": socket.gethostname()})
            write_text(run_dir / "config.yaml", dump_config(cfg))
        except BaseException:
            unlock_run(run_dir)
            raise
    distributed.barrier()
    return run_dir


def finish_run(run_dir: Path, status: str, **extra) -> None:
    previous = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").is_file() else {}
    write_json(run_dir / "status.json", {**previous, "status": status, "finished": now(), **extra})


def setup(cfg: Config, task: Task):
    model, tokenizer = task.load(cfg)
    splits = made_afresh(lambda: task.prepare(cfg, tokenizer, context_length(model)))  # the parsed source freed whole
    return model, tokenizer, splits


def checked_setup(cfg: Config, resume: bool, overwrite: bool):
    """(task, model, tokenizer, splits), the task resolved once for the job; every check that can refuse the job
    (precision, trackers, the run folder, the data) runs here, before any run folder exists."""
    devices.check_precision(cfg.train.precision)
    tracking.check(cfg.train.report_to)
    check_run_dir(cfg, resume, overwrite)
    task = get_task(cfg.task)
    return (task, *setup(cfg, task))


def guarded(run_dir: Path, job):
    """Run a job; on any failure mark the run folder failed, so it never looks complete."""
    if not distributed.is_main():  # under torchrun, rank 0 alone keeps status.json
        result = job()
        distributed.barrier()
        return result
    try:
        try:
            result = job()
            distributed.barrier()  # complete only once every rank is done
        except BaseException as e:
            finish_run(run_dir, "failed", error=f"{type(e).__name__}: {e}")
            raise
        finish_run(run_dir, "complete")
    finally:
        unlock_run(run_dir)
    return result


@contextlib.contextmanager
def tracked(cfg: Config, run_dir: Path, main: bool, parent_run_id: str | None = None):
    """The run's experiment trackers (train.report_to) on rank 0, or None; closed at the end of the block, with
    the report and model as MLflow artifacts when the block completes. `parent_run_id`: the MLflow run of the
    search study this run is a trial of."""
    if not (main and cfg.train.report_to):
        yield None
        return
    trackers = tracking.Trackers(cfg.train.report_to, run_dir, to_dict(cfg), cfg.name, cfg.train.tracking_uri,
                                 parent_run_id)
    try:
        yield trackers
    except BaseException:
        trackers.finish(run_dir, "FAILED")
        raise
    trackers.finish(run_dir)


def announce(cfg: Config, rows: list[dict], splits, main: bool) -> Eta:
    """Say the run's schedule over its training rows (`task.train_rows`: packed where data.packing packs) now;
    the returned estimate (report/plan.py, the arithmetic of `tailor plan`) says the expected duration once the
    run's first logged steps are timed, timing nothing extra. The training loop takes it as its trackers
    (`around` the run's own, which hear every record through it)."""
    sched = schedule(cfg, len(rows))
    if main:
        print(sched.line(), flush=True)
    per_sample = sum(map(sample_tokens, rows)) / max(len(rows), 1)
    step_tokens = per_sample * cfg.train.batch_size * cfg.train.grad_accum
    return Eta(None, sched, scoring_tokens(splits.validation, cfg.eval.batch_size), step_tokens,
               val_generation=validation_generated(cfg, len(splits.validation)) > 0)


def train_job(cfg: Config, resume: bool = False, overwrite: bool = False, on_validation=None,
              parent_run_id: str | None = None) -> dict:
    """Fine-tune into the run folder. Under `torchrun --nproc_per_node N` every process runs this and
    trains data-parallel (see tailor.train.distributed); rank 0 alone writes the run folder."""
    created_group = distributed.init(cfg.train.device)  # the device, and the process group under torchrun
    task, model, tokenizer, splits = checked_setup(cfg, resume, overwrite)
    run_dir = open_run(cfg, resume, overwrite)
    main = distributed.is_main()

    def job():
        if main:
            write_json(run_dir / "data_stats.json", splits.stats)
        rows = task.train_rows(cfg, splits.train)
        eta = announce(cfg, rows, splits, main)
        with tracked(cfg, run_dir, main, parent_run_id) as trackers:
            result = train(cfg, task, model, tokenizer, rows, splits.validation, run_dir, resume=resume,
                           on_validation=on_validation, trackers=eta.around(trackers))
            summary = {"train": result.__dict__, "data": splits.stats, "world_size": distributed.world_size()}
            if main:
                write_json(run_dir / "train_summary.json", summary)
                print(f"report: {write_report(run_dir, finishing=True)}")
                write_card(cfg, run_dir)
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
    task, model, tokenizer, splits = checked_setup(cfg, resume, overwrite)
    run_dir = open_run(cfg, resume, overwrite)

    def job():
        nonlocal model
        write_json(run_dir / "data_stats.json", splits.stats)
        print(f"data: {json.dumps(splits.stats['samples'])} samples; "
              f"{splits.stats['train_supervised_tokens']} of {splits.stats['train_tokens']} train tokens supervised")
        rows = task.train_rows(cfg, splits.train)
        eta = announce(cfg, rows, splits, True)
        bf16 = use_half(cfg.train.precision)
        base_file = run_dir / "base_eval.json"
        if resume and base_file.is_file():
            base = json.loads(base_file.read_text())
        else:
            started = time.perf_counter()
            metrics, replies = task.evaluate(model, tokenizer, splits.test, cfg, bf16, "base")
            eta.test_evaluation_seconds = time.perf_counter() - started  # the fine-tuned one takes about as long
            base = {"metrics": metrics, "replies": replies}
            write_json(base_file, base)

        with tracked(cfg, run_dir, True) as trackers:
            result = train(cfg, task, model, tokenizer, rows, splits.validation, run_dir, resume=resume,
                           trackers=eta.around(trackers))
            # The kept (best) model is read back from the run folder: the trained weights go first, so the two
            # are not held together (0.5 GB more at SmolLM2-135M's size, the peak of `make demo` after training).
            model = None  # no cycles hold it (tests/test_run_memory.py): freed here
            release_freed_memory()
            summary = finish_run_job(cfg, task, run_dir, tokenizer, splits, base, result, bf16)
        return summary

    return guarded(run_dir, job)


def finish_run_job(cfg: Config, task: Task, run_dir: Path, tokenizer, splits, base: dict, result, bf16: bool) -> dict:
    """`tailor run` after training: the kept model on the test split, the comparison, the report and card."""
    tuned_model, _ = load_weights(run_dir / "model", cfg.model.dtype)
    metrics, replies = task.evaluate(tuned_model, tokenizer, splits.test, cfg, bf16, "fine-tuned")
    tuned = {"metrics": metrics, "replies": replies}

    summary = {
        "test": {"base": base["metrics"], "fine_tuned": tuned["metrics"]},
        "train": result.__dict__,
        "data": splits.stats,
    }
    write_json(run_dir / "metrics.json", summary)
    write_json(run_dir / "samples.json", [
        {**task.sample_record(s), "base": b, "fine_tuned": f}
        for s, b, f in zip(splits.test, base["replies"], tuned["replies"])
    ])
    print()
    print(f"test split, {len(splits.test)} samples ({len(tuned['replies'])} {task.OUTPUTS}):")
    print(task.metrics_table({"base": base["metrics"], "fine-tuned": tuned["metrics"]}))
    print(f"\ntraining: {result.steps} steps, best validation loss {result.best_val_loss:.4f} at step "
          f"{result.best_step}, {result.tokens_per_second:.0f} tokens/s, {result.seconds:.0f} s")
    print()
    print(task.side_by_side(splits.test, {"base": base["replies"], "fine-tuned": tuned["replies"]}, cfg.eval.show_samples))
    comparison = compare_run(run_dir)  # paired bootstrap over the generated test prompts
    if comparison:
        print(f"\nbase vs fine-tuned on the {comparison['samples']} {task.OUTPUTS} test samples:")
        print(comparison_table(comparison["metrics"], "base", "fine-tuned", comparison["confidence"]))
        for caveat in length_caveats(comparison["metrics"]):
            print(f"note: {caveat}")
    print(f"\nreport: {write_report(run_dir, finishing=True)}")
    write_card(cfg, run_dir)
    print(f"run folder: {run_dir}  (chat with it: tailor chat {run_dir})")
    return summary

