"""What the throughput benchmarks share: the machine, the samples, the precision, the matmul peak, FLOP counts.

Run by hand (see BENCHMARKS.md); nothing here is imported by tailor itself.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from tailor.config import config_from_dict
from tailor.data.tokenize import IGNORE
from tailor.models.load import context_length, load
from tailor.tasks.dialogue import prepare

MODEL = os.environ.get("TAILOR_BENCH_MODEL") or "smollm2-135m-instruct"  # another model folder, where set


def machine() -> str:
    """CPU model and core count from lscpu, plus the load average (the machine may be shared)."""
    try:
        info = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if ":" in line)
        cpu = f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} CPUs"
    except OSError:
        cpu = platform.processor()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    if torch.cuda.is_available():
        cpu += f"; GPU {torch.cuda.get_device_name(0)}"
    return f"{cpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load}"


def config(max_length: int = 256, train: int = 0, val: int = 0, test: int = 0, **train_settings):
    """A dialogue config on chitchat; sample caps pick the same samples in every process."""
    return config_from_dict({
        "model": {"name": MODEL, "max_length": max_length},
        "data": {"source": "chitchat", "max_train_samples": train, "max_val_samples": val,
                 "max_test_samples": test, "overlong": "skip"},
        "train": train_settings,
    })


def model_and_samples(cfg):
    model, tokenizer = load(MODEL)
    splits = prepare(cfg, tokenizer, context_length(model))
    return model, tokenizer, splits


def add_precision(parser) -> None:
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="both sides' precision; auto: tailor's choice here (bf16 where the CPU has it natively, "
                             "fp32 where bf16 would be emulated)")


def half(precision: str, device: str = "cpu") -> bool:
    """True when the benchmark runs both sides in bf16 (`--precision`) on `device` (auto: tailor's own choice there)."""
    from tailor import device as devices

    if precision != "auto":
        return precision == "bf16"
    return devices.half_dtype("auto", devices.resolve(device)) == torch.bfloat16


def add_device(parser) -> None:
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where both sides train: the CPU (the default) or the first CUDA GPU; on a GPU the "
                             "peak memory is CUDA's largest allocation instead of the process's peak RSS")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(device: str | None = None) -> float:
    """The side's peak memory on `device` (a train.device name; None: the process's device): the process's peak
    RSS on the CPU, CUDA's largest allocation on a GPU."""
    from tailor import device as devices

    return devices.peak_memory_mb(None if device is None else devices.resolve(device))


ALLOCATORS = ("system", "mimalloc")


def add_side_options(parser, example: str) -> None:
    """The options both training benchmarks take for their sides: tailor's extra train settings and each side's
    allocator (HF's on glibc's malloc as a script runs, tailor's on mimalloc as the `tailor` command runs)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a train setting for tailor's side, e.g. --set {example} (repeatable)")
    parser.add_argument("--hf-allocator", choices=ALLOCATORS, default="system",
                        help="HF's side: glibc's malloc (the default, as a script runs) or mimalloc preloaded")
    parser.add_argument("--tailor-allocator", choices=ALLOCATORS, default="mimalloc",
                        help="tailor's side: mimalloc (the default, as the `tailor` command runs) or glibc's malloc")


def tailor_settings(pairs: list[str]) -> dict:
    """--set KEY=VALUE pairs as train settings (values read as YAML: numbers, booleans, auto)."""
    import yaml

    return {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in pairs)}


# (M, K, N) of the probe's products: a square one and the shapes of SmolLM2-sized training (rows of a batch
# by hidden and MLP widths), so the peak is the best this CPU does at shapes like the ones measured against it.
PEAK_SHAPES = ((2048, 2048, 2048), (1024, 4096, 1024), (2048, 576, 1536), (2048, 1536, 576), (2048, 2048, 8192))
MOVED = 0.10  # probes before and after a run further apart than this: the machine was busy


def matmul_peak(dtype=torch.bfloat16, shapes=PEAK_SHAPES, repeats: int = 5, seconds: float = 3.0,
                device: str = "cpu") -> float:
    """Best matmul GFLOP/s in `dtype` over several shapes, each timed in `repeats` rounds of short bursts
    (about `seconds` in all): the ceiling a model FLOPs utilisation is measured against."""
    best = 0.0
    per_burst = seconds / (len(shapes) * repeats)
    from tailor import device as devices

    def sync():  # a GPU's products are queued
        devices.synchronize(torch.device(device))

    for m, k, n in shapes:
        a = torch.randn(m, k, dtype=dtype, device=device)
        b = torch.randn(k, n, dtype=dtype, device=device)
        for _ in range(3):
            a @ b  # warm up oneDNN / cuBLAS for this shape
        sync()
        tick = time.perf_counter()
        a @ b
        sync()
        count = max(1, int(per_burst / max(time.perf_counter() - tick, 1e-6)))  # products per burst
        for _ in range(repeats):
            tick = time.perf_counter()
            for _ in range(count):
                a @ b
            sync()
            best = max(best, count * 2 * m * k * n / (time.perf_counter() - tick) / 1e9)
    return best


class Peak:
    """The matmul peak in the run's dtype probed before a run (on construction) and after it (`after()`): the
    best of both is the peak, and a gap over 10% between them means something else ran on the machine meanwhile."""

    def __init__(self, bf16: bool = True, device: str = "cpu") -> None:
        self.dtype, self.device = (torch.bfloat16 if bf16 else torch.float32), device
        self.before = matmul_peak(self.dtype, device=device)
        self.after_run: float | None = None

    def after(self) -> float:
        self.after_run = matmul_peak(self.dtype, device=self.device)
        return self.value

    @property
    def value(self) -> float:
        return max(self.before, self.after_run or 0.0)

    def moved(self) -> float:
        """Relative gap between the two probes (0 before the second)."""
        return 0.0 if self.after_run is None else abs(self.before - self.after_run) / self.value

    def describe(self) -> str:
        line = f"{'bf16' if self.dtype == torch.bfloat16 else 'fp32'} matmul peak: {self.value:.0f} GFLOP/s (best of {len(PEAK_SHAPES)} shapes; before the run " \
               f"{self.before:.0f}" + (f", after {self.after_run:.0f})" if self.after_run is not None else ")")
        if self.moved() > MOVED:
            line += (f"\nWARNING: the peak probed before and after the run differs by {self.moved():.1%} (> {MOVED:.0%}): "
                     f"something else used the {self.device.upper()}; speed and MFU figures of this run are not trustworthy")
        return line


def train_flops(model_config, samples: list[dict], passes: int = 3) -> float:
    """Model FLOPs one training pass over `samples` needs (forward + backward = 3 x forward; `passes=2`
    when the weights are frozen, as with LoRA: the backward computes input gradients only).

    Counted without padding, with the causal half of attention, and with the LM head only on
    supervised positions, since that is all the loss needs. Embedding lookups are not matmuls.
    """
    c = model_config
    d, ff, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    kv = c.num_key_value_heads * (d // c.num_attention_heads)
    linear = layers * (2 * d * d + 2 * d * kv + 3 * d * ff)  # q, o, k, v, gate/up/down
    total = 0.0
    for s in samples:
        n = len(s["input_ids"])
        supervised = sum(1 for y in s["labels"][1:] if y != IGNORE)
        attention = layers * 2 * d * n * (n + 1)  # QK^T and AV over the causal half, forward
        total += passes * (2 * linear * n + attention + 2 * d * c.vocab_size * supervised)
    return total


def prefix_flops_saved(model_config, batches: list[list[dict]], passes: int = 3) -> float:
    """The part of `train_flops` tailor does not compute: a prefix every row of a batch shares runs
    once on the CPU (`tailor.models.prefix`), not once per row. Subtracted, it gives the FLOPs actually done."""
    from tailor.models.prefix import MIN_SHARED

    saved = 0.0
    for batch in batches:
        ids = [s["input_ids"] for s in batch]
        shared = min(len(os.path.commonprefix(ids)), max(map(len, ids)) - 1)
        if len(ids) > 1 and shared >= MIN_SHARED:
            prefix = {"input_ids": ids[0][:shared], "labels": [IGNORE] * shared}
            saved += (len(ids) - 1) * train_flops(model_config, [prefix], passes)
    return saved


def train_hf(model, tokenizer, train_set: list[dict], steps: int, warmup: int, batch: int, lr: float,
             weight_decay: float, warmup_steps: int, gradient_checkpointing: bool = False, passes: int = 3,
             bf16: bool = True, optimizer: str = "adamw", device: str = "cpu") -> dict:
    """The Hugging Face Trainer configured for speed on `device` (bf16 autocast unless `bf16` is False, length-grouped
    batches) on `train_set`, one epoch; tokens/s and FLOP/s over the steps after `warmup`. The model is trained in
    place (and moved to the GPU on `cuda`). `optimizer` is tailor's train.optimizer name; the Trainer gets its own
    name for the same optimizer."""
    import tempfile

    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    features = [{"input_ids": s["input_ids"], "attention_mask": [1] * len(s["input_ids"]), "labels": s["labels"]}
                for s in train_set]
    # Pads labels with -100, so the loss stays on the responses exactly as tailor's (DataCollatorForLanguageModeling
    # would train on the prompts too).
    pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    per_step: list[list[dict]] = []

    def collate(rows):
        per_step.append(rows)
        return pad(rows)

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            ends.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=batch, learning_rate=lr, weight_decay=weight_decay,
            lr_scheduler_type="cosine", warmup_steps=warmup_steps, max_grad_norm=1.0, num_train_epochs=1,
            bf16=bf16, use_cpu=device == "cpu", train_sampling_strategy="group_by_length", logging_steps=1,
            save_strategy="no", report_to="none", seed=0, disable_tqdm=True,
            gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
            optim={"adamw": "adamw_torch_fused", "adamw_8bit": "adamw_torch_8bit", "adamw_4bit": "adamw_torch_4bit"}[optimizer])
        trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=collate,
                          processing_class=tokenizer, callbacks=[Clock()])
        trainer.train()
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    seconds = ends[-1] - ends[warmup]
    steady = [s for rows in per_step[warmup:steps] for s in rows]
    return {"steps": len(ends) - 1, "tokens_per_s": sum(len(s["input_ids"]) for s in steady) / seconds,
            "flops_per_s": train_flops(model.config, steady, passes) / seconds, "peak_rss_mb": peak_memory_mb(device),
            "last_train_loss": sum(losses[-5:]) / len(losses[-5:])}


def train_tailor(cfg, model, tokenizer, train_set: list[dict], val_set: list[dict], warmup: int, passes: int = 3,
                 save: bool = True) -> dict:
    """tailor's loop on `train_set` (log_every must be 1); tokens/s and FLOP/s over the steps after `warmup`.
    `save=False` leaves out the checkpoint and model folder the loop writes at the end (the HF side saves
    nothing either), which for a large model would take minutes and disk."""
    import contextlib
    import tempfile
    from unittest import mock

    from tailor import device as devices
    from tailor.tasks import get_task
    from tailor.train import loop

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if not save:
            for name in ("save_checkpoint", "save_model_folder"):
                stack.enter_context(mock.patch.object(loop, name, lambda *a, **k: None))
        cfg.output_dir, cfg.name = tmp, "bench"
        result = loop.train(cfg, get_task(cfg.task), model, tokenizer, train_set, val_set, cfg.run_dir)
        log = [json.loads(line) for line in (cfg.run_dir / "log.jsonl").read_text().splitlines()]
    train_log = [r for r in log if r["split"] == "train"]
    # The loop logs each step's real tokens/s; its batches are a pure function of the seed, so the
    # tokens of each step are known and the step times follow.
    stream = loop.micro_batches([len(s["input_ids"]) for s in train_set], cfg.train.batch_size, cfg.train.seed, 0)
    batches = [[train_set[i] for i in next(stream)[1]] for _ in range(result.steps)]
    tokens = [sum(len(s["input_ids"]) for s in b) for b in batches]
    seconds = sum(t / r["tokens_per_second"] for t, r in zip(tokens[warmup:], train_log[warmup:]))
    steady = [s for b in batches[warmup:] for s in b]
    flops = train_flops(model.config, steady, passes)
    return {"steps": result.steps, "tokens_per_s": sum(tokens[warmup:]) / seconds,
            "flops_per_s": flops / seconds, "peak_rss_mb": peak_memory_mb(),
            "done_flops_per_s": (flops - (prefix_flops_saved(model.config, batches[warmup:], passes)
                                          if devices.is_cpu() else 0.0)) / seconds,  # the pass is CPU-only
            "val_loss": [r for r in log if r["split"] == "validation"][-1]["loss"],
            "last_train_loss": sum(r["loss"] for r in train_log[-5:]) / len(train_log[-5:])}



def allocator_env(allocator: str) -> dict[str, str]:
    """The environment of a side's process on `allocator`: "system" (glibc's malloc, how a Python script runs
    unless told otherwise) or "mimalloc" (what the `tailor` command preloads: tailor/preload.py)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if allocator == "mimalloc":
        from tailor.preload import library

        path = library()
        if path is None:
            raise SystemExit("mimalloc: the cmeel-mimalloc wheel is not installed (make install)")
        env["LD_PRELOAD"] = path
    return env


def run_child(script: str, args: list[str], timeout: float, allocator: str = "system") -> dict:
    """Run one side of a benchmark in its own process, so its peak memory is its own, on `allocator`
    (`allocator_env`); it prints one JSON line last."""
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=timeout,
                          env=allocator_env(allocator))
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


HERE = Path(__file__).resolve().parent
