"""tailor plan CONFIG: what a run will cost, before it runs.

Prints the data statistics (samples and tokens per split, the share of training tokens trained on) and the
run's step schedule, then times the run's own parts on this machine, with the config's settings, in a
temporary run folder that is deleted afterwards (nothing is written to output_dir): one warm-up step and
--steps optimizer steps of the training loop on the run's first micro-batches, one step on its longest
micro-batch (for the memory peak), a validation on a few batches, the final saves, and a few generated test
outputs. From these it predicts the wall time of `tailor train` and `tailor run` and their peak memory
against the memory this machine has available, and names the settings that would make a run fit when it
does not. `--json FILE` writes the figures.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from tailor.commands.common import add_config_arguments, config_from_args

NAME = "plan"
HELP = "predict a run before it runs: data statistics, steps, wall time and peak memory (times a few real steps)"


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps timed after one warm-up step (default 3)")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--force", action="store_true", help="time the steps even when the weights, gradients and "
                        "optimizer state alone would not fit the available memory")


class StepClock:
    """The timing run's trackers: when each logged step ended, and the peak memory then."""

    def __init__(self):
        self.ends: dict[int, float] = {}
        self.peaks: dict[int, float] = {}

    def log(self, record: dict) -> None:
        if record.get("split") == "train":
            self.ends[int(record["step"])] = time.perf_counter()
            self.peaks[int(record["step"])] = float(record.get("peak_memory_mb") or 0.0)


def timed(fn, *args):
    """(fn's result, seconds it took, the device's queued work included)."""
    from tailor import device as devices

    start = time.perf_counter()
    out = fn(*args)
    devices.synchronize()
    return out, time.perf_counter() - start


def spread(items: list, k: int) -> list:
    """k items evenly spaced over `items`."""
    return [items[i * len(items) // k] for i in range(min(k, len(items)))]


class Harness:
    """The task as the timing run's training loop sees it: its `validate` times validation on chosen batches of
    the validation split (and generation on a few, where validation generates) and returns the real
    validation's metrics; everything else is the task's own."""

    def __init__(self, task, measured: dict):
        self.task, self.measured = task, measured
        self.validated = 0.0

    def __getattr__(self, name):
        if name == "task":
            raise AttributeError(name)
        return getattr(self.task, name)

    def validate(self, model, tokenizer, samples: list[dict], cfg, bf16: bool) -> dict:
        from tailor.report.plan import sample_tokens, scoring_tokens, validation_generated

        m, size = self.measured, cfg.eval.batch_size
        scoring = replace(cfg, eval=replace(cfg.eval, val_generate_samples=0, metric="loss", mode="auto"))
        order = sorted(samples, key=sample_tokens, reverse=True)
        middle = len(order) // 2
        typical = order[max(0, middle - size): middle + size] if len(order) > size else order
        timed(self.task.validate, model, tokenizer, order[:size], scoring, bf16)  # the longest batch: warm-up, peak
        metrics, m["score_seconds"] = timed(self.task.validate, model, tokenizer, typical, scoring, bf16)
        m["score_tokens"] = scoring_tokens(typical, size)
        if validation_generated(cfg, len(order)):
            k = min(cfg.decode.batch_size, cfg.eval.val_generate_samples, len(order))
            chosen = spread(order, k)
            generating = replace(cfg, eval=replace(cfg.eval, val_generate_samples=k))
            more, m["val_generate_seconds"] = timed(self.task.validate, model, tokenizer, chosen, generating, bf16)
            m["val_generate_tokens"], m["val_generate_outputs"] = scoring_tokens(chosen, size), k
            metrics = {**metrics, **more}
        self.validated = time.perf_counter()
        return metrics


@contextlib.contextmanager
def drawing(queue: list[list[int]]):
    """The training loop takes the plan's micro-batches (train.loop.micro_batches replaced for the timing run;
    a micro-batches argument of train() would say this without replacing anything)."""
    from tailor.train import loop

    original = loop.micro_batches
    loop.micro_batches = lambda lengths, batch_size, seed, start: iter([(0, idx) for idx in queue])
    try:
        yield
    finally:
        loop.micro_batches = original


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def time_generation(task, model, tokenizer, cfg, pool: list[dict], bf16: bool) -> dict:
    """What one evaluation pays once (a half copy of the weights, packing them for the decoder: one output of
    one token), and the time of one batch of test outputs drawn evenly from those the run generates."""
    from tailor.report.plan import scoring_tokens

    warm = replace(cfg, eval=replace(cfg.eval, generate_samples=1),
                   decode=replace(cfg.decode, max_new_tokens=1, min_new_tokens=0))
    once = timed(task.evaluate, model, tokenizer, pool[:1], warm, bf16)[1]
    chosen = spread(pool, cfg.decode.batch_size)
    some = replace(cfg, eval=replace(cfg.eval, generate_samples=len(chosen)))
    seconds = timed(task.evaluate, model, tokenizer, chosen, some, bf16)[1]
    return {"generate_once_seconds": once, "generate_seconds": seconds,
            "generate_tokens": scoring_tokens(chosen, cfg.eval.batch_size), "generate_outputs": len(chosen)}


def time_run(cfg, task, model, tokenizer, splits, queue: list[list[int]], steps: int, pool: list[dict], bf16: bool,
             measured: dict) -> tuple[StepClock, dict, str]:
    """Run the training loop on the queued micro-batches in a temporary run folder (deleted afterwards), then
    generate a few test outputs; fills `measured`. Returns (the step clock, {memory figure: MB}, the line where
    the loop says its device and path)."""
    from tailor import device as devices
    from tailor.report.plan import current_memory_mb
    from tailor.train.loop import train

    device = devices.current()
    clock, harness = StepClock(), Harness(task, measured)
    captured = io.StringIO()  # what training and evaluation print (their own tables) stays out of the plan
    folder = Path(tempfile.mkdtemp(prefix="tailor-plan-"))
    try:
        run_dir = folder / "plan"
        run_dir.mkdir()
        timing = replace(cfg, name="plan", output_dir=str(folder),
                         train=replace(cfg.train, max_steps=steps + 2, eval_every=0, save_every=0, log_every=1,
                                       patience=0, report_to=[]))
        with contextlib.redirect_stdout(captured):
            with drawing(queue):
                train(timing, harness, model, tokenizer, splits.train, splits.validation, run_dir, trackers=clock)
            measured["save_seconds"] = time.perf_counter() - harness.validated  # the model folder and checkpoint
            measured["save_model_bytes"] = folder_bytes(run_dir / "model") + folder_bytes(run_dir / "adapter")
            measured["save_checkpoint_bytes"] = folder_bytes(run_dir / "checkpoints")
            memory = {"train_peak": max(devices.peak_memory_mb(device), *clock.peaks.values()),
                      "steps_peak": clock.peaks[steps + 2], "after_train": current_memory_mb(device)}
            if pool:
                measured.update(time_generation(task, model, tokenizer, cfg, pool, bf16))
            memory["all_peak"] = max(memory["train_peak"], devices.peak_memory_mb(device))
    except BaseException:
        sys.stdout.write(captured.getvalue())
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    path = next((line for line in captured.getvalue().splitlines() if line.startswith("device ")), "")
    return clock, memory, path


def measure(cfg, steps: int, force: bool = False) -> dict:
    """The plan: data statistics, the schedule, the measured parts, the prediction and the memory verdict."""
    import torch

    from tailor import device as devices
    from tailor.errors import TailorError
    from tailor.models.load import context_length
    from tailor.precision import use_half
    from tailor.report import plan
    from tailor.tasks import get_task
    from tailor.train.loop import optimizer_kind

    if devices.launched():
        raise TailorError("`tailor plan` predicts a run in one process; run it without torchrun / accelerate launch.")
    if steps < 1:
        raise TailorError(f"--steps must be at least 1, got {steps}.")
    device = devices.choose(cfg.train.device)
    devices.check_precision(cfg.train.precision)
    available, source = plan.available_memory_mb(device)
    task = get_task(cfg.task)
    (model, tokenizer), load_seconds = timed(task.load, cfg)
    splits, prepare_seconds = timed(task.prepare, cfg, tokenizer, context_length(model))
    start_seconds = max(plan.process_age_seconds(), load_seconds + prepare_seconds)  # imports included where known
    bf16 = use_half(cfg.train.precision)

    stats = plan.data_stats(splits)  # of the samples; the loop steps over rows (several samples each under data.packing)
    splits = replace(splits, train=task.train_rows(cfg, splits.train))
    sched = plan.schedule(cfg, len(splits.train))
    n_val, n_test = len(splits.validation), len(splits.test)
    generated = plan.generated_count(cfg, task, n_test)
    val_generated = plan.validation_generated(cfg, n_val)
    result = {"task": cfg.task, "data": stats, "schedule": asdict(sched), "timed": False,
              "evaluation_note": f"scoring {n_test} test samples" + (f", generating {generated}" if generated else ""),
              "validation_note": f" ({n_val} samples" + (f", {val_generated} generated" if val_generated else "") + ")"}

    # Memory before any step: the process after loading, the weights, a gradient and AdamW state per trainable one.
    kind = optimizer_kind(cfg.train, device, model)  # train.optimizer auto: bf16 moments on the CPU speed paths
    weights_b, state_b = plan.model_bytes(model, kind)
    weights_mb, state_mb = weights_b / 2**20, state_b / 2**20
    base_mb = plan.current_memory_mb(device) if devices.is_cpu(device) else weights_mb
    half_copy_mb = weights_mb / 2 if bf16 and any(p.dtype == torch.float32 for p in model.parameters()) else 0.0
    inner = getattr(model, "get_base_model", lambda: model)()
    layers = next((v for k in ("num_hidden_layers", "num_layers", "n_layer")
                   if isinstance(v := getattr(getattr(inner, "config", None), k, None), int)), 12)
    half_native = devices.cpu_has_bf16() if devices.is_cpu(device) else True
    memory = {"available_mb": round(available, 1), "available_source": source, "weights_mb": round(weights_mb, 1),
              "state_mb": round(state_mb, 1), "after_setup_mb": round(base_mb, 1)}

    # The run's micro-batches: their padded tokens, and the longest of them (the activations' peak).
    batches = plan.run_batches(cfg, splits.train, sched.steps)
    sizes = [plan.padded([splits.train[i] for i in idx]) for idx in batches]
    longest = batches[max(range(len(batches)), key=sizes.__getitem__)]
    longest_width = max(len(splits.train[i]["input_ids"]) for i in longest)

    static = base_mb + state_mb
    if static > available and not force:
        memory.update(peak_mb=round(static, 1), activations_mb=0.0)
        return {**result, "memory": memory,
                "advice": plan.advice(cfg, memory, layers, longest_width, bf16, half_native, kind),
                "not_timed": f"the model after loading and its gradient and AdamW state ({plan.mb_text(static)}) "
                             "exceed the available memory; --force times the steps anyway"}

    # A warm-up step and `steps` steps on the run's first micro-batches, then one step on its longest.
    accum = cfg.train.grad_accum
    queue = [batches[i % len(batches)] for i in range((steps + 1) * accum)] + [longest] * accum
    step_tokens = [sum(plan.padded([splits.train[i] for i in idx]) for idx in queue[s * accum:(s + 1) * accum])
                   for s in range(steps + 2)]
    print(f"timing {steps} step(s) after a warm-up, one on the longest micro-batch ({len(longest)} x {longest_width} "
          "tokens), a validation, the saves" + (" and a few generated test outputs" if generated else "") + " ...",
          file=sys.stderr, flush=True)
    measured: dict = {"start_seconds": start_seconds, "load_seconds": load_seconds}
    clock, peaks, path = time_run(cfg, task, model, tokenizer, splits, queue, steps, splits.test[:generated], bf16,
                                  measured)
    measured["steps"] = [(step_tokens[s - 1], clock.ends[s] - clock.ends[s - 1]) for s in range(2, steps + 3)]

    val_tokens = plan.scoring_tokens(splits.validation, cfg.eval.batch_size)
    test_tokens = plan.scoring_tokens(splits.test, cfg.eval.batch_size)
    prediction = plan.predict(sched, sum(sizes), val_tokens, test_tokens, generated, val_generated, measured)

    after_phase = peaks["after_train"] + weights_mb + half_copy_mb  # `tailor run` loads the kept model beside it
    run_peak = max(peaks["all_peak"], after_phase)
    activations = max(0.0, peaks["steps_peak"] - base_mb - state_mb)
    memory.update(train_peak_mb=round(peaks["train_peak"], 1), run_peak_mb=round(run_peak, 1),
                  peak_mb=round(run_peak, 1), activations_mb=round(activations, 1))
    advice = plan.advice(cfg, {**memory, "peak_mb": peaks["train_peak"]}, layers, longest_width, bf16, half_native, kind)
    for a in advice:  # settings that shrink training leave the reload of the kept model as it is
        a["peak_mb"] = round(max(a["peak_mb"], after_phase), 1)
    not_included = ["report.html, the model card and the bootstrap comparison (seconds)",
                    "other processes' load on this machine (timings taken while it is busy come out high)"]
    if sched.patience:
        not_included.insert(0, f"early stopping (train.patience {sched.patience}) may end training sooner")
    if generated:
        not_included.append("the fine-tuned model's outputs may be longer or shorter than the base model's timed here")
    timing = {"steps": steps, "path": path, "longest_micro_batch": f"{len(longest)} x {longest_width} tokens",
              "measured": measured, "run_padded_tokens": sum(sizes), "validation_padded_tokens": val_tokens,
              "test_padded_tokens": test_tokens, "generated_per_evaluation": generated}
    return {**result, "timed": True, "timing": timing, "prediction": prediction, "memory": memory, "advice": advice,
            "not_included": not_included}


def main(args) -> int:
    from tailor.fsutil import write_json
    from tailor.report.plan import format_plan

    cfg = config_from_args(args)
    result = {"config": str(args.config), **measure(cfg, args.steps, args.force)}
    print(format_plan(result))
    if args.json_out:
        write_json(args.json_out, result)
    return 0
