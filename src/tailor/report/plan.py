"""What a run will cost, before it runs: its step schedule, wall time and peak memory, from measured parts.

`tailor plan CONFIG` (commands/plan.py) measures the parts with the run's own code on this machine (the
start, a few real optimizer steps of the training loop, a validation, the saves, a few generated test
outputs) and `predict` adds them up the way the run spends them:

    tailor train = start + steps x (a + b x padded tokens of the step) + validations + saves
    tailor run   = tailor train + base evaluation + reloading the kept model + fine-tuned evaluation

`schedule` is the training loop's own step arithmetic (train/loop.py), so the plan's step count is the
run's. `tailor run` / `tailor train` print `Schedule.line()` at the start and, once their first logged
steps are timed, an estimate from the same arithmetic (`Eta`), without timing anything extra.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from tailor import device as devices
from tailor.train import lowbit

SPLITS = ("train", "validation", "test")
EVAL_SPEEDUP = 3.0  # a scoring pass (forward only) against a training step (forward, backward, optimizer), per token
MARGIN = 0.9  # a predicted peak above this share of the available memory is called tight


# ---------------------------------------------------------------- the step schedule


def count(steps: int, every: int) -> int:
    """Events of a run of `steps` steps that happen every `every` steps and at the last (0 = only at the last)."""
    return steps // every + (steps % every != 0) if every else 1


@dataclass
class Schedule:
    steps: int  # optimizer steps the run takes, unless early stopping ends it sooner
    batch_size: int
    grad_accum: int
    batches_per_epoch: int
    epochs: float  # passes over the training samples the steps make
    max_steps: int
    validations: int
    eval_every: int
    checkpoints: int
    save_every: int
    patience: int

    def line(self) -> str:
        """One line: what the run will do."""
        how = (f"train.max_steps {self.max_steps}, {self.epochs:.3g} epoch(s)" if self.max_steps
               else f"{self.epochs:.3g} epoch(s)")  # of the training rows: packed rows where data.packing packs
        every = f"every {self.eval_every} steps and at the last" if self.eval_every else "at the end"
        saves = f"every {self.save_every} steps and at the last" if self.save_every else "at the end"
        stop = (f"; early stopping (train.patience {self.patience}) may end it sooner" if self.patience else "")
        return (f"plan: {self.steps} optimizer steps ({how} of {self.batches_per_epoch} micro-batches of "
                f"{self.batch_size}, grad_accum {self.grad_accum}), {self.validations} validation(s) ({every}), "
                f"{self.checkpoints} checkpoint(s) ({saves}){stop}")

    def validations_from(self, step: int) -> int:
        """Validations still to come once `step` is done (the one at `step` itself included)."""
        if not self.eval_every:
            return 1
        return self.steps // self.eval_every - (step - 1) // self.eval_every + (self.steps % self.eval_every != 0)


def schedule(cfg, train_samples: int) -> Schedule:
    """The run's steps, validations and checkpoints, as train/loop.py counts them."""
    t = cfg.train
    batches = max(1, math.ceil(train_samples / t.batch_size))
    steps = t.max_steps or max(1, math.ceil(t.epochs * batches / t.grad_accum))
    return Schedule(steps, t.batch_size, t.grad_accum, batches, steps * t.grad_accum / batches, t.max_steps,
                    count(steps, t.eval_every), t.eval_every, count(steps, t.save_every), t.save_every, t.patience)


def run_batches(cfg, train_set: list[dict], steps: int) -> list[list[int]]:
    """The run's micro-batches in the order it takes them (sample indices), `steps` optimizer steps' worth."""
    from tailor.train.loop import micro_batches

    lengths = [len(s["input_ids"]) for s in train_set]
    t = cfg.train
    return [idx for _, idx in islice(micro_batches(lengths, t.batch_size, t.seed, 0), steps * t.grad_accum)]


# ---------------------------------------------------------------- tokens


def sample_tokens(sample: dict) -> int:
    """Tokens a sample puts through the model: its input, plus an encoder-decoder's decoder labels."""
    n = len(sample["input_ids"])
    return n + len(sample["labels"]) if sample.get("seq2seq") else n


def padded(samples: list[dict]) -> int:
    """Tokens a micro-batch of these samples computes on, padded to its longest: rows x width (both sides of
    an encoder-decoder)."""
    out = len(samples) * max(len(s["input_ids"]) for s in samples)
    if samples[0].get("seq2seq"):
        out += len(samples) * max(len(s["labels"]) for s in samples)
    return out


def scoring_tokens(samples: list[dict], batch_size: int) -> int:
    """Padded tokens of scoring `samples` in length-sorted batches, as evaluation batches them."""
    from tailor.data.batches import sequential

    if not samples:
        return 0
    lengths = [len(s["input_ids"]) for s in samples]
    return sum(padded([samples[i] for i in idx]) for idx in sequential(len(samples), batch_size, lengths))


def generated_count(cfg, task, test_samples: int) -> int:
    """Test outputs one evaluation generates: every test sample for translation, eval.generate_samples of them
    for dialogue and text, none for classification (a label per text, scored in one pass)."""
    if getattr(task, "OUTPUTS", "generated") != "generated":
        return 0
    return test_samples if cfg.task == "translation" else min(cfg.eval.generate_samples, test_samples)


def validation_generated(cfg, validation_samples: int) -> int:
    """Validation samples each validation generates replies for (dialogue's eval.val_generate_samples)."""
    return min(cfg.eval.val_generate_samples, validation_samples) if cfg.task == "dialogue" else 0


def data_stats(splits) -> dict:
    """Samples and tokens per split and the share of training tokens that are targets, from the task's prepare
    (the figures `tailor data check` and the run's data_stats.json report)."""
    tokens = {s: sum(sample_tokens(x) for x in splits[s]) for s in SPLITS}
    train_tokens = splits.stats.get("train_tokens", tokens["train"])
    supervised = splits.stats.get("train_supervised_tokens", 0)
    samples = {s: len(splits[s]) for s in SPLITS}
    samples.update(splits.stats.get("samples", {}))  # before packing (data.packing): the training rows may hold several
    return {"samples": samples, "train_rows": len(splits.train), "tokens": tokens, "train_tokens": train_tokens,
            "train_supervised_tokens": supervised, "trained_share": supervised / train_tokens if train_tokens else 0.0}


# ---------------------------------------------------------------- memory


def _kib(text: str, key: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return None


def current_memory_mb(device=None) -> float:
    """Memory the process holds now: the device's allocation on a GPU, else the process's resident set."""
    device = device or devices.current()
    gpu = devices.gpu_memory_mb(device)
    if gpu is not None:
        return gpu[0]
    try:
        rss = _kib(Path("/proc/self/status").read_text(), "VmRSS")
    except OSError:
        rss = None
    return rss / 1024 if rss is not None else devices.peak_memory_mb(device)


def available_memory_mb(device=None) -> tuple[float, str]:
    """(MB a run could use, where that figure comes from): a GPU's free memory, else the memory the kernel says
    is available (MemAvailable, and a cgroup's limit where lower) plus what this process already holds (a
    run would hold it too)."""
    device = device or devices.current()
    gpu = devices.gpu_memory_mb(device)
    if gpu is not None:
        return gpu[1], f"free on {device}"
    from tailor.allocator import available_mb, total_memory_mb

    free, source = available_mb()
    if free is None:
        return float(total_memory_mb()), "total RAM (MemAvailable unknown)"
    return free + current_memory_mb(device), source


MOMENT_BYTES = {"adamw_bf16": 2.0, "adamw_fp8": 1.0, "adamw_8bit": 1.0, "adamw_4bit": 0.5}  # each moment, a weight; adamw: the weight's


def model_bytes(model, optimizer: str = "adamw") -> tuple[int, int]:
    """(bytes of the weights and buffers, bytes AdamW training adds: a gradient and two moments per trainable
    weight, the moments as train.optimizer `optimizer` keeps them)."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    weights += sum(b.numel() * b.element_size() for b in model.buffers())
    state = sum(p.numel() * (p.element_size() + 2 * MOMENT_BYTES.get(optimizer, p.element_size()))
                for p in model.parameters() if p.requires_grad)
    return weights, int(state)


def advice(cfg, memory: dict, layers: int, longest_width: int, half: bool, half_native: bool,
           optimizer: str = "adamw") -> list[dict]:
    """Settings that lower the peak, each with the peak it predicts: activations scale with the micro-batch's
    rows and width, the gradient and AdamW state with the trainable weights."""
    t, m = cfg.train, cfg.model
    peak, act, state, weights = memory["peak_mb"], memory["activations_mb"], memory["state_mb"], memory["weights_mb"]
    out = []

    def add(setting: str, mb: float, note: str) -> None:
        out.append({"setting": setting, "peak_mb": round(max(mb, 0.0), 1), "note": note})

    if t.batch_size >= 2 and act > 0:
        add(f"train.batch_size={t.batch_size // 2} train.grad_accum={t.grad_accum * 2}", peak - act / 2,
            "the same effective batch; activations halve, steps take about as long")
    if not t.gradient_checkpointing and act > 0:
        kept = max(2 / max(layers, 1), 0.3)  # each layer's input, one layer recomputed at a time, and the head
        add("train.gradient_checkpointing=true", peak - act * (1 - kept), "about a third more time per step")
    if not m.lora.rank and state > 0:
        add("model.lora.rank=16", peak - state, "trains small adapters: no gradient or AdamW state for the weights")
    if not m.lora.rank and state > 0 and optimizer in ("adamw", "adamw_bf16") and t.strategy == "ddp":
        # optimizer: as the run takes it. state: a gradient and two moments a weight (fp32 or bf16 moments)
        moments = state * 2 / 3 if optimizer == "adamw" else state / 2
        if optimizer == "adamw":
            add("train.optimizer=adamw_bf16", peak - moments / 2, "AdamW's moments in bf16, rounded stochastically: "
                "steps about as fast, losses close to, not equal to, AdamW's")
        if devices.is_cpu(devices.current()):  # tailor's own 8-bit step runs on the CPU (kernels/adamw_fp8.cpp)
            add("train.optimizer=adamw_fp8", peak - moments * (0.75 if optimizer == "adamw" else 0.5),
                "AdamW's moments in 8 bits: steps about as fast, losses close to, not equal to, AdamW's")
        else:
            add("train.optimizer=adamw_8bit", peak - moments * (0.75 if optimizer == "adamw" else 0.5),
                "AdamW's moments in 8 bits (torchao): slower steps, losses close to, not equal to, AdamW's"
                + ("" if lowbit.available() else "; needs pip install 'tailor[lowbit]'"))
    if longest_width >= 64 and longest_width > m.max_length // 2 and act > 0:
        width = max(8, m.max_length // 2)
        add(f"model.max_length={width}", peak - act * (1 - width / longest_width),
            "shorter samples: longer ones are cut or skipped (data.overlong), which changes the data")
    if not half and act > 0:
        add("train.precision=bf16", peak - act / 2,
            "bf16 activations" + ("" if half_native else "; this CPU has no native bf16, so steps get slower"))
    if m.dtype == "float32" and half:
        add("model.dtype=bfloat16", peak - (weights + state) / 2, "bf16 weights, gradients and AdamW state")
    if m.lora.rank and m.quantize == "none" and devices.current().type == devices.CUDA:
        add("model.quantize=4bit", peak - weights * 0.7, "QLoRA: 4-bit frozen weights (bitsandbytes)")
    out.sort(key=lambda a: a["peak_mb"])
    return out


# ---------------------------------------------------------------- prediction


def fit_step_time(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(a seconds per step, b seconds per padded token) with time = a + b x tokens, by least squares over the
    timed steps; a fit that comes out negative (noise, or attention's quadratic cost on the longest batch)
    falls back to time proportional to tokens (a = 0)."""
    tokens = sum(n for n, _ in points)
    seconds = sum(s for _, s in points)
    if len(points) >= 2:
        mean_n, mean_s = tokens / len(points), seconds / len(points)
        var = sum((n - mean_n) ** 2 for n, _ in points)
        if var > 0:
            b = sum((n - mean_n) * (s - mean_s) for n, s in points) / var
            a = mean_s - b * mean_n
            if a >= 0 and b > 0:
                return a, b
    return 0.0, seconds / max(tokens, 1)


def predict(sched: Schedule, run_tokens: int, val_tokens: int, test_tokens: int, generated: int, val_generated: int,
            m: dict) -> dict:
    """Seconds of each part of `tailor train` and `tailor run` from the measured figures `m` (see
    commands/plan.py: measure)."""
    a, b = fit_step_time(m["steps"])
    training = sched.steps * a + b * run_tokens
    rate = m["score_seconds"] / max(m["score_tokens"], 1)  # seconds per padded token, teacher-forced
    once = m.get("generate_once_seconds", 0.0)
    per_output = 0.0
    if m.get("generate_outputs"):
        per_output = max(0.0, m["generate_seconds"] - once - rate * m["generate_tokens"]) / m["generate_outputs"]
    val_gen = 0.0
    if val_generated and m.get("val_generate_outputs"):
        each = max(0.0, m["val_generate_seconds"] - rate * m["val_generate_tokens"] - once) / m["val_generate_outputs"]
        val_gen = once + each * val_generated
    validation = rate * val_tokens + val_gen
    moved = m["save_model_bytes"] + m["save_checkpoint_bytes"]
    per_byte = m["save_seconds"] / moved if moved else 0.0
    saves = per_byte * (sched.validations * m["save_model_bytes"] + sched.checkpoints * m["save_checkpoint_bytes"])
    evaluation = rate * test_tokens + ((once + per_output * generated) if generated else 0.0)
    parts = {
        "start": m["start_seconds"],
        "training": training,
        "validation": sched.validations * validation,
        "saving": saves,
        "base_evaluation": evaluation,
        "after_training": m["load_seconds"] + evaluation,
    }
    train_total = parts["start"] + parts["training"] + parts["validation"] + parts["saving"]
    return {
        "seconds": {k: round(v, 3) for k, v in parts.items()},
        "seconds_per_step": round(training / max(sched.steps, 1), 4),
        "step_fit": {"seconds_per_step": round(a, 4), "seconds_per_padded_token": b},
        "seconds_per_validation": round(validation, 3),
        "seconds_per_evaluation": round(evaluation, 3),
        "train_total_seconds": round(train_total, 3),
        "run_total_seconds": round(train_total + parts["base_evaluation"] + parts["after_training"], 3),
    }


# ---------------------------------------------------------------- text


def seconds_text(s: float) -> str:
    if s < 9.95:
        return f"{s:.1f} s"
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def mb_text(mb: float) -> str:
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


def memory_verdict(peak_mb: float, available_mb: float) -> str:
    if peak_mb > available_mb:
        return "does NOT fit"
    return "fits, tightly" if peak_mb > MARGIN * available_mb else "fits"


def format_plan(plan: dict) -> str:
    """The plan as the console shows it."""
    d, s = plan["data"], plan["schedule"]
    n, tok = d["samples"], d["tokens"]
    lines = [
        f"data ({plan['task']}): samples train {n['train']:,}"
        + (f" (packed into {d['train_rows']:,} rows)" if d.get("train_rows", n["train"]) != n["train"] else "")
        + f", validation {n['validation']:,}, test {n['test']:,}",
        f"  tokens train {d['train_tokens']:,} (trained on: {d['train_supervised_tokens']:,}, "
        f"{100 * d['trained_share']:.1f}%), validation {tok['validation']:,}, test {tok['test']:,}",
        Schedule(**s).line(),
    ]
    if not plan.get("timed"):
        lines.append(f"not timed: {plan.get('not_timed', '')}")
    else:
        p, t = plan["prediction"], plan["timing"]
        sec = p["seconds"]
        lines += [
            f"timed on this machine: {t['steps']} step(s) of the run after 1 warm-up, 1 on its longest micro-batch "
            f"({t['longest_micro_batch']}); {t['path']}",
            "",
            f"  {'part':<30}{'time':>10}   what",
            f"  {'start':<30}{seconds_text(sec['start']):>10}   imports, model, data (measured)",
            f"  {'base evaluation (run only)':<30}{seconds_text(sec['base_evaluation']):>10}   "
            + plan["evaluation_note"],
            f"  {'training':<30}{seconds_text(sec['training']):>10}   {s['steps']} steps x "
            f"{p['seconds_per_step']:.3g} s/step",
            f"  {'validation':<30}{seconds_text(sec['validation']):>10}   {s['validations']} pass(es) x "
            f"{seconds_text(p['seconds_per_validation'])}" + plan.get("validation_note", ""),
            f"  {'saving':<30}{seconds_text(sec['saving']):>10}   at most {s['validations']} model folder(s), "
            f"{s['checkpoints']} checkpoint(s)",
            f"  {'after training (run only)':<30}{seconds_text(sec['after_training']):>10}   reload the kept model, "
            "fine-tuned evaluation",
            f"  {'tailor train':<30}{seconds_text(p['train_total_seconds']):>10}",
            f"  {'tailor run':<30}{seconds_text(p['run_total_seconds']):>10}",
            "",
            "not included: " + "; ".join(plan["not_included"]),
        ]
    mem = plan["memory"]
    lines.append("")
    if plan.get("timed"):
        lines.append(f"memory: predicted peak {mb_text(mem['train_peak_mb'])} (tailor train), "
                     f"{mb_text(mem['run_peak_mb'])} (tailor run); available {mb_text(mem['available_mb'])} "
                     f"({mem['available_source']}): {memory_verdict(mem['peak_mb'], mem['available_mb'])}")
    else:
        lines.append(f"memory: at least {mb_text(mem['peak_mb'])} (the model after loading, plus a gradient and "
                     f"AdamW state per trainable weight); available {mb_text(mem['available_mb'])} "
                     f"({mem['available_source']}): {memory_verdict(mem['peak_mb'], mem['available_mb'])}")
    if mem["peak_mb"] > MARGIN * mem["available_mb"]:
        lines.append(f"WARNING: the run's predicted peak {mb_text(mem['peak_mb'])} "
                     + ("does not fit" if mem["peak_mb"] > mem["available_mb"] else "leaves little of")
                     + f" the {mb_text(mem['available_mb'])} available. Settings that lower it (predicted peak each):")
        for a in plan["advice"]:
            fits = "fits" if a["peak_mb"] <= MARGIN * mem["available_mb"] else "not enough alone"
            lines.append(f"  {a['setting']:<48}{mb_text(a['peak_mb']):>10}  {fits}; {a['note']}")
        if not plan["advice"]:
            lines.append("  none known for this config; a machine with more memory, or a smaller model")
    return "\n".join(lines)


# ---------------------------------------------------------------- the estimate of a running job


class Eta:
    """The run's own estimate, said once after its first logged steps: passed to the training loop as its
    trackers, it hears each logged step (and hands it on to the real trackers, train.report_to, if any). The
    seconds per step come from two consecutive logged steps with no validation between them; a validation pass
    is estimated from its tokens at EVAL_SPEEDUP times the training speed per token (`step_tokens`: the mean
    tokens of a step), and `tailor run`'s fine-tuned evaluation as taking as long as its base evaluation."""

    def __init__(self, inner, sched: Schedule, val_tokens: int, step_tokens: float,
                 test_evaluation_seconds: float | None = None, val_generation: bool = False, say=None):
        self.inner, self.sched, self.val_tokens, self.step_tokens = inner, sched, val_tokens, step_tokens
        self.test_evaluation_seconds = test_evaluation_seconds
        self.val_generation = val_generation
        self.say = say
        self.last: tuple[int, float] | None = None
        self.said = ""

    def around(self, inner) -> "Eta":
        """This estimate, handing the records on to `inner` (the run's trackers, or None)."""
        self.inner = inner
        return self

    def log(self, record: dict) -> None:
        if self.inner is not None:
            self.inner.log(record)
        if self.said:
            return
        now = time.perf_counter()
        if record.get("split") != "train":  # a validation in between: time the next two steps afresh
            self.last = None
            return
        step = int(record.get("step", 0))
        if self.last is not None and step > self.last[0]:
            self.said = self.estimate(step, (now - self.last[1]) / (step - self.last[0]))
            (self.say or _write)(self.said)
        self.last = (step, now)

    def estimate(self, step: int, seconds_per_step: float) -> str:
        left = self.sched.steps - step
        training = left * seconds_per_step
        validations = self.sched.validations_from(step)  # the one at this step comes after this log line
        per_validation = self.val_tokens * seconds_per_step / max(self.step_tokens, 1.0) / EVAL_SPEEDUP
        total = training + validations * per_validation
        parts = [f"{left} steps x {seconds_per_step:.3g} s = {seconds_text(training)}",
                 f"{validations} validation(s) ~{seconds_text(validations * per_validation)}"
                 + (" plus their generation" if self.val_generation else "")]
        if self.test_evaluation_seconds is not None:
            total += self.test_evaluation_seconds
            parts.append(f"fine-tuned evaluation ~{seconds_text(self.test_evaluation_seconds)} (as the base one took)")
        done = (dt.datetime.now() + dt.timedelta(seconds=total)).strftime("%H:%M")
        return (f"estimate after step {step}: about {seconds_text(total)} more ({'; '.join(parts)}), "
                f"done around {done}; `tailor plan` times every part")


def _write(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line)


def process_age_seconds() -> float:
    """Seconds since this process started (its imports included), from /proc; 0 where unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return 0.0
