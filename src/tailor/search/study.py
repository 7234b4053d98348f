"""The study behind `tailor search`: trials are ordinary training runs under the search folder.

<output_dir>/<name>-search/
  config.yaml          the base config the study was started with (a rerun must match it)
  study.db             the Optuna study (SQLite): interrupted and rerun it continues; workers share it
  trials/trial-0003/   one run folder per trial (log.jsonl, status.json, model/ of the best trial)
  best.yaml            the best trial's config, ready for `tailor train`
  trials.csv, summary.json, plots/*.png, report.html

A trial reports every validation of `eval.metric` to the pruner; a pruned trial stops training at
once. Its objective is the best validation value it reached (direction `eval.mode`). A trial whose
worker died (SIGKILL, a lost machine) is failed and retried with the same values; the retry resumes
the dead trial's run folder from its latest checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import shutil
import socket
import time
import warnings
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from tqdm import tqdm

from tailor.config import Config, dump_config
from tailor.errors import TailorError
from tailor.fsutil import write_text
from tailor.search.space import baseline_params, check_space, grid_values, suggest, trial_config
from tailor.train.checkpoint import latest_checkpoint
from tailor.train.log import JsonlLog
from tailor.train import tracking
from tailor.workflow import check_name, finish_run, train_job

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_SECONDS = 20  # a worker's running trial is considered dead after GRACE_SECONDS without heartbeat
GRACE_SECONDS = 90
MAX_RETRY = 3

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # tailor prints one line per trial itself


def search_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / f"{cfg.name}-search"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def make_sampler(cfg: Config) -> optuna.samplers.BaseSampler:
    s = cfg.search
    if s.sampler == "grid":
        return optuna.samplers.GridSampler({k: grid_values(k, v) for k, v in s.space.items()}, seed=s.seed)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=max(s.startup_trials, 1))


def make_pruner(cfg: Config, total_steps: int | None = None) -> optuna.pruners.BasePruner:
    s = cfg.search
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.startup_trials, n_warmup_steps=max(s.min_steps, 0))
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(s.min_steps, 1), max_resource=total_steps or "auto",
                                              reduction_factor=s.reduction_factor)
    if s.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(s.min_steps, 1), reduction_factor=s.reduction_factor)
    return optuna.pruners.NopPruner()


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Serialise study creation: workers starting together would race to create the SQLite tables."""
    with open(folder / ".study.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_study(cfg: Config, folder: Path) -> optuna.Study:
    with folder_lock(folder):
        return _open_study(cfg, folder)


def _open_study(cfg: Config, folder: Path) -> optuna.Study:
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{folder.resolve() / 'study.db'}",
        engine_kwargs={"connect_args": {"timeout": 120}},  # several workers share the file
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
    )
    steps = cfg.train.max_steps or None
    return optuna.create_study(
        study_name=cfg.name, storage=storage, sampler=make_sampler(cfg), pruner=make_pruner(cfg, steps),
        direction="minimize" if cfg.eval.mode == "min" else "maximize", load_if_exists=True,
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reclaim_dead_trials(study: optuna.Study) -> list[int]:
    """Queue retries of trials cut short by Ctrl-C, and of running trials whose worker on this machine
    has died (the heartbeat does the same for other machines' workers, after GRACE_SECONDS)."""
    host, reclaimed = socket.gethostname(), []
    callback = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted") and trial.number not in retried:
            callback(study, trial)
            reclaimed.append(trial.number)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker", "")
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        callback(study, study._storage.get_trial(trial._trial_id))
        reclaimed.append(trial.number)
    return reclaimed


def objective_value(records: list[dict], metric: str, mode: str) -> float:
    values = [r[metric] for r in records if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    if not values:
        return math.nan
    return min(values) if mode == "min" else max(values)


class Objective:
    """Runs one trial: draw values, train with pruning, return the best validation value."""

    def __init__(self, base: Config, folder: Path) -> None:
        self.base = base
        self.folder = folder

    def __call__(self, trial: optuna.Trial) -> float:
        base, metric, mode = self.base, self.base.eval.metric, self.base.eval.mode
        params = {key: suggest(trial, key, spec) for key, spec in base.search.space.items()}
        retried = RetryHeartbeatStaleTrialCallback.retried_trial_number(trial.storage.get_trial(trial._trial_id))
        name = f"trial-{(trial.number if retried is None else retried):04d}"
        cfg = trial_config(base, params, name=name, output_dir=str(self.folder / "trials"))
        trial.set_user_attr("run_dir", str(cfg.run_dir))
        trial.set_user_attr("worker", worker_id())
        resume = retried is not None and latest_checkpoint(cfg.run_dir) is not None

        records: list[dict] = []
        if resume:  # re-report what the dead worker's trial saw up to its checkpoint
            step = json.loads((latest_checkpoint(cfg.run_dir) / "state.json").read_text())["step"]
            for r in JsonlLog(cfg.run_dir / "log.jsonl").read():
                if r.get("split") == "validation" and r["step"] <= step and metric in r:
                    records.append(r)
                    trial.report(float(r[metric]), r["step"])
        pruned_at: list[int] = []

        def on_validation(step: int, metrics: dict) -> bool:
            records.append({"step": step, **metrics})
            if isinstance(metrics.get(metric), (int, float)):
                trial.report(float(metrics[metric]), step)  # NaN counts as worse than anything
                if trial.should_prune():
                    pruned_at.append(step)
                    return True
            return False

        started = time.perf_counter()
        trial.set_user_attr("interrupted", False)
        try:
            parent = (tracking.parent_run(cfg.run_dir.parent, f"search {self.folder.name}", base.train.tracking_uri)
                      if "mlflow" in base.train.report_to else None)  # trials nest under the study's MLflow run
            summary = train_job(cfg, resume=resume, overwrite=not resume, on_validation=on_validation,
                                parent_run_id=parent)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # the next `tailor search` retries it from its checkpoint
            raise
        best = objective_value(records, metric, mode)
        best_record = next((r for r in records if r.get(metric) == best), {})
        trial.set_user_attr("steps", summary["train"]["steps"])
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        trial.set_user_attr("best_step", best_record.get("step"))
        trial.set_user_attr("val_loss", best_record.get("loss"))
        if pruned_at:
            finish_run(cfg.run_dir, "pruned", pruned_at_step=pruned_at[0])
            raise optuna.TrialPruned(f"pruned at step {pruned_at[0]}")
        if math.isnan(best):
            raise TailorError(f"trial {trial.number}: no finite validation value of eval.metric '{metric}'.")
        return best


class Cleanup:
    """After each trial: drop finished trials' checkpoints and the models search.keep_models does not keep."""

    def __init__(self, keep: str) -> None:
        self.keep = keep

    def __call__(self, study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        try:
            best = study.best_trial.number
        except ValueError:
            best = None
        for trial in study.get_trials(deepcopy=False, states=FINISHED + (TrialState.FAIL,)):
            run_dir = trial.user_attrs.get("run_dir")
            if not run_dir or not Path(run_dir).is_dir():
                continue
            run_dir = Path(run_dir)
            retried = any(t.system_attrs.get("failed_trial") == trial.number for t in study.get_trials(deepcopy=False))
            if trial.state == TrialState.FAIL and (retried or trial.user_attrs.get("interrupted")):
                continue  # its retry resumes from these checkpoints
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            keep = self.keep == "all" or (self.keep == "best" and trial.number == best)
            if not keep:
                shutil.rmtree(run_dir / "model", ignore_errors=True)


class Progress:
    """One line per finished trial, and a bar over the trials this worker runs."""

    def __init__(self, total: int, metric: str) -> None:
        self.bar = tqdm(total=total, desc="search", unit="trial", dynamic_ncols=True)
        self.metric = metric

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.bar.update(1)
        value = f"{self.metric} {trial.value:.4f}" if trial.value is not None else ""
        if trial.state == TrialState.PRUNED and trial.intermediate_values:
            step = max(trial.intermediate_values)
            value = f"pruned at step {step} ({self.metric} {trial.intermediate_values[step]:.4f})"
        try:
            best = f"best so far: trial {study.best_trial.number}, {study.best_value:.4f}"
        except ValueError:
            best = ""
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        self.bar.write(f"trial {trial.number} {trial.state.name.lower()}: {value}  [{params}]  {best}")


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def is_search_folder(folder: Path) -> bool:
    """A folder tailor made for a study (its SQLite study or its lock file): --overwrite deletes nothing else."""
    return (folder / "study.db").is_file() or (folder / ".study.lock").is_file()


def prepare_folder(cfg: Config, overwrite: bool) -> Path:
    check_name(cfg.name)  # the search folder <output_dir>/<name>-search must stay inside output_dir
    folder = search_dir(cfg)
    text = dump_config(cfg)
    if overwrite and folder.exists():
        if not folder.is_dir() or (any(folder.iterdir()) and not is_search_folder(folder)):
            raise TailorError(f"--overwrite: {folder} is not a tailor search folder (no study.db inside); "
                              "tailor deletes only folders it made. Set another name (name=...).")
        shutil.rmtree(folder)
    saved = folder / "config.yaml"
    if saved.is_file():
        if _without_budget(saved.read_text()) != _without_budget(text):
            raise TailorError(
                f"{folder} holds a study started from a different config ({saved}). Rerun with the same config "
                f"to continue it, use --overwrite to start again, or set another name (name=...)."
            )
    else:
        folder.mkdir(parents=True, exist_ok=True)
        write_text(saved, text)
    return folder


def _without_budget(config_yaml: str) -> dict:
    """The config minus what may change between reruns of one study (its trial budget)."""
    import yaml

    data = yaml.safe_load(config_yaml)
    data.get("search", {}).pop("trials", None)
    data.get("search", {}).pop("timeout", None)
    return data


def search_job(cfg: Config, trials: int | None = None, timeout: float | None = None, overwrite: bool = False) -> dict:
    """Run (or continue) the study until it has `trials` finished trials or `timeout` seconds pass,
    then write best.yaml, the trial table, plots and report.html. Returns the summary."""
    from tailor.search.report import write_outputs

    check_space(cfg)
    trials = trials or cfg.search.trials
    timeout = cfg.search.timeout if timeout is None else timeout
    folder = prepare_folder(cfg, overwrite)
    study = open_study(cfg, folder)
    study.set_user_attr("metric", cfg.eval.metric)
    with folder_lock(folder):  # one worker at a time queues retries and the baseline
        reclaimed = reclaim_dead_trials(study)
        if reclaimed:
            print(f"trials {reclaimed} lost their worker; they are retried from their latest checkpoint")
        if cfg.search.baseline and cfg.search.sampler != "grid" and not study.trials:
            params = baseline_params(cfg)
            if params is not None:
                study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)
            else:
                print("search.baseline: the config's own values are not all inside the space; no baseline trial")

    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = trials - done
    started = time.time()
    if remaining > 0:
        print(f"search folder: {folder}  ({done} of {trials} trials finished; running up to {remaining} more)")
        progress = Progress(remaining, cfg.eval.metric)
        study.optimize(
            Objective(cfg, folder),
            n_trials=remaining,
            timeout=timeout or None,
            catch=(TailorError,),
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=FINISHED), Cleanup(cfg.search.keep_models), progress],
            gc_after_trial=True,
        )
        progress.bar.close()
    else:
        print(f"search folder: {folder}: the study already has {done} finished trials (--trials {trials})")
        Cleanup(cfg.search.keep_models)(study, None)
    summary = write_outputs(cfg, study, folder, worker_seconds=time.time() - started)
    return summary
