"""The training loop: one explicit function, read top to bottom.

Details it does not hide:
- the loss of an optimizer step is the summed NLL of all its micro-batches divided by the number
  of supervised tokens in the whole step, so long and short responses weigh per token;
- the order of micro-batches is a pure function of (seed, epoch), so step s always sees the same
  data and a resumed run continues exactly where the checkpoint was taken;
- tokens/s counts real (non-padding) tokens;
- the model and every batch live on train.device (tailor.device); autocast and loss scaling follow the
  device (bf16, or fp16 with a GradScaler on GPUs without bf16); Accelerate wraps the model for DDP;
- tailor's CPU speed paths (kernels, resident head, sparse embedding gradient, lean MLP backward, retained heap) apply on the
  CPU in one process only (train.cpu_fast_paths); everything else is the plain PyTorch path.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm
from transformers import get_scheduler

from tailor import device as devices
from tailor import preload
from tailor.allocator import keep_within_cap, release_freed_memory, retain_freed_memory, training_cap_mb
from tailor.config import Config, dump_config
from tailor.errors import TailorError
from tailor.data.batches import length_grouped
from tailor.kernels import end_pass, patched
from tailor.kernels.embedding import densify
from tailor.train import deepspeed_engine, distributed, lowbit
from tailor.train.adamw_bf16 import AdamWBf16
from tailor.train.adamw_fp8 import AdamWFp8
from tailor.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_model_folder
from tailor.train.log import JsonlLog


@dataclass
class TrainResult:
    steps: int
    best_val_loss: float
    best_step: int
    stopped_early: bool
    tokens_per_second: float
    seconds: float
    device: str = ""
    precision: str = ""
    peak_memory_mb: float = 0.0  # the device's: CUDA's largest allocation, else the process's peak RSS


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: list[float],
                   kind: str = "adamw", seed: int = 0) -> torch.optim.Optimizer:
    """AdamW (train.optimizer: 'adamw'; its moments in bf16, train/adamw_bf16.py, or 8 bits, train/adamw_fp8.py;
    in 8 or 4 bits from torchao, train/lowbit.py: `seed` seeds adamw_bf16's rounding); biases and norm weights
    (1-D tensors) get no weight decay."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "adamw_bf16":
        return AdamWBf16(groups, lr=lr, betas=betas, seed=seed)
    if kind == "adamw_fp8":
        return AdamWFp8(groups, lr=lr, betas=betas, seed=seed)
    if kind != "adamw":
        return lowbit.make(kind, groups, lr, betas)
    # fused: one pass over param, grad and both moments per tensor; foreach makes several, which on CPU
    # measured several times slower on 2 CPU cores (BENCHMARKS.md).
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=True)


def optimizer_kind(t, device: torch.device, model: torch.nn.Module | None = None) -> str:
    """train.optimizer as the run takes it: 'auto' is adamw_fp8 for fp32 weights in one process on the CPU speed
    paths (a quarter of the AdamW state, steps about as fast, the demo's results within rounding: BENCHMARKS.md),
    adamw elsewhere (a GPU has its own fused AdamW and memory; DDP, FSDP and DeepSpeed reduce or shard fp32 state;
    bf16 weights would take the slow torch path of tailor's steps)."""
    if t.optimizer != "auto":
        return t.optimizer
    alone = t.strategy == "ddp" and distributed.world_size() == 1
    fp32 = model is None or all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    return "adamw_fp8" if alone and fp32 and t.cpu_fast_paths and devices.is_cpu(device) else "adamw"


def scaled_clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_norm: float, scaler) -> torch.Tensor:
    """fp16 with loss scaling: unscale, clip, step (skipped by the scaler when a gradient overflowed), rescale."""
    scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scaler.step(optimizer)
    scaler.update()
    return norm


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm of all the gradients in fp32, as get_total_norm gives it for fp32 ones; bf16 gradients (the lean
    projections' under adamw_bf16, kernels/linear.py) are widened as they are read, not rounded to a bf16 norm."""
    if not grads:
        return torch.tensor(0.0)
    norms = torch._foreach_norm(grads, 2, dtype=torch.float32)
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))


def clip_and_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """clip_grad_norm_ then optimizer.step(), with the clipping factor applied inside the fused AdamW step.

    The fused kernel divides each gradient by `grad_scale` as it reads it (the hook GradScaler unscales
    through), so the clipped gradients are never written: one pass over the gradients fewer a step.
    Returns the norm before clipping, as clip_grad_norm_ does."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = total_norm(grads)
    fused = all(g.get("fused") for g in optimizer.param_groups) and not hasattr(optimizer, "grad_scale")
    if not fused:
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, norm)
        optimizer.step()
        return norm
    # clip_grads_with_norm_'s factor, clamped at 1: an unclipped step divides by exactly 1.
    factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
    optimizer.grad_scale = (1.0 / factor).to(torch.float32)
    try:
        optimizer.step()
    finally:
        del optimizer.grad_scale
    return norm


def micro_batches(lengths: list[int], batch_size: int, seed: int, start: int):
    """Endless (epoch, micro-batch indices) from global micro-batch number `start` on."""
    epoch, offset = divmod(start, math.ceil(len(lengths) / batch_size))
    while True:
        batches = length_grouped(lengths, batch_size, seed, epoch)
        for idx in batches[offset:]:
            yield epoch, idx
        epoch, offset = epoch + 1, 0


CPU_PASS_TOKENS = 1024  # train.max_pass_tokens auto with the CPU speed paths


def pass_cap(setting: int | str, fast: bool) -> int:
    """train.max_pass_tokens as a number: 'auto' caps a pass at CPU_PASS_TOKENS on the CPU speed paths, where
    products of 1,024 rows run within a few per cent of 2,048 and activation memory halves; elsewhere no cap."""
    if setting != "auto":
        return int(setting)
    return CPU_PASS_TOKENS if fast else 0


def passes(idx: list[int], lengths: list[int], cap: int) -> list[list[int]]:
    """A micro-batch's rows in passes of at most `cap` padded tokens (rows x longest row) each, at least one row
    a pass (train.max_pass_tokens; 0 = one pass)."""
    rows = max(1, cap // max(lengths[i] for i in idx)) if cap else len(idx)
    return [idx[i : i + rows] for i in range(0, len(idx), rows)]


def train(cfg: Config, task, model, tokenizer, train_set: list[dict], val_set: list[dict], run_dir: Path,
          resume: bool = False, on_validation: Callable[[int, dict], bool] | None = None, trackers=None) -> TrainResult:
    """Fine-tune `model`; `on_validation(step, metrics)` hears each validation and returns True to stop
    (the hyperparameter search prunes bad trials this way). `task` is the task's module (tailor.tasks),
    resolved once by the caller: its collate, loss and validation are the loop's."""
    t = cfg.train
    if t.threads:
        torch.set_num_threads(t.threads)
    device = devices.current()  # fixed by the workflow from train.device
    devices.check_precision(t.precision, device)
    half = devices.half_dtype(t.precision, device)  # autocast dtype, None for fp32
    bf16 = half is not None  # validation and scoring run on a half copy of the weights
    devices.place(model, device)
    devices.reset_peak_memory(device)
    torch.manual_seed(t.seed)
    random.seed(t.seed)
    pad_id = tokenizer.pad_token_id
    config_yaml = dump_config(cfg)

    train_set = task.train_rows(cfg, train_set)  # data.packing: several samples a row; steps count rows
    lengths = [len(s["input_ids"]) for s in train_set]
    batches_per_epoch = math.ceil(len(train_set) / t.batch_size)
    total_steps = t.max_steps or max(1, math.ceil(t.epochs * batches_per_epoch / t.grad_accum))
    warmup = t.warmup_steps or int(t.warmup_ratio * total_steps)

    model.train()
    if t.gradient_checkpointing:
        # Non-reentrant checkpointing: works with frozen inputs (LoRA) and keeps the RNG for dropout.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    accel = distributed.accelerator(device)
    sharded = distributed.shard_model(model, t.strategy)  # FSDP (train.strategy fsdp): before the optimizer
    kind = optimizer_kind(t, device, model)  # train.optimizer auto resolved: said in the start line
    optimizer = make_optimizer(model, t.learning_rate, t.weight_decay, t.betas, kind, t.seed)
    engine = None  # DeepSpeed's engine (train.strategy deepspeed): it steps the optimizer it returns
    if t.strategy == "deepspeed":
        engine, optimizer = deepspeed_engine.initialize(t, model, task.token_stats, optimizer, run_dir)
    scheduler = get_scheduler(t.schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    log = JsonlLog(run_dir / "log.jsonl")
    main = distributed.is_main()  # only rank 0 writes logs, checkpoints and the model folder

    metric, sign = cfg.eval.metric, (1 if cfg.eval.mode == "min" else -1)  # best = lowest sign * value
    state = {"best": math.inf, "best_val_loss": math.inf, "best_step": 0, "bad_evals": 0}
    step = 0
    checkpoint = latest_checkpoint(run_dir) if resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, model, optimizer, scheduler, engine)  # every rank loads the same one
        step = state["step"]
        if main:
            log.truncate_after(step)
    elif main:  # a new run, or a resume before the first checkpoint: steps start at 1 again, so does the log
        log.path.unlink(missing_ok=True)
    # The wrapped loss: DeepSpeed's engine, or DDP/FSDP when launched by torchrun with several processes, else None.
    ddp = None if engine is not None else distributed.wrap(model, task.token_stats, accel)
    wrapped = engine if engine is not None else ddp
    fast = t.cpu_fast_paths and devices.is_cpu(device) and wrapped is None  # tailor's CPU speed paths
    cap = pass_cap(t.max_pass_tokens, fast)  # train.max_pass_tokens
    if fast:
        retain_freed_memory(training_cap_mb(t.retain_memory_mb), grow=t.retain_memory_mb == "auto")
        release_freed_memory()  # what an evaluation before training left
    # fp16 autocast needs loss scaling (bf16 has fp32's range and does not); DeepSpeed scales by its own config.
    scaler = torch.amp.GradScaler(device.type) if half == torch.float16 and engine is None else None

    data = micro_batches(lengths, t.batch_size, t.seed, step * t.grad_accum)
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True, disable=not main)
    started, window_tokens, window_time = time.perf_counter(), 0, 0.0
    all_tokens, train_time, stopped_early = 0, 0.0, False

    def record(entry: dict) -> None:
        """One line of log.jsonl, and the same figures to the trackers (train.report_to, tracking.py)."""
        log.write(entry)
        if trackers is not None:
            trackers.log(entry)

    def validate() -> bool:
        """Score the validation split; keep the best model; True when patience has run out."""
        if fast:  # the steps' freed pages back first: scoring allocates other sizes, which they would not fit
            release_freed_memory()
        metrics = task.validate(model, tokenizer, val_set, cfg, bf16)
        model.train()
        if main:
            record({"step": step, "split": "validation", **metrics})
            bar.write(f"step {step}: validation " + "  ".join(
                f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
        if metric not in metrics:
            raise TailorError(f"eval.metric '{metric}' is not among the validation metrics: {', '.join(metrics)}.")
        if sign * metrics[metric] < state["best"]:
            state.update(best=sign * metrics[metric], best_val_loss=metrics["loss"], best_step=step, bad_evals=0)
            if main or sharded:  # a sharded model is gathered by every rank; rank 0 writes
                save_model_folder(run_dir / "model", model, tokenizer, config_yaml, {"validation": metrics, "step": step})
        else:
            state["bad_evals"] += 1
        stop = bool(t.patience) and state["bad_evals"] >= t.patience
        return bool(on_validation is not None and on_validation(step, metrics)) or stop

    # One process on the CPU: the speed paths of tailor.kernels (resident LM head, sparse embedding gradient,
    # RMSNorm and rotary kernels), applied for the run and undone after it; train.kernels leaves out the C++.
    with patched(model, training=True, enabled=fast, compiled=t.kernels, optimizer=optimizer, half=half) as paths:
        if main:  # said once: where the run trains and which path it takes
            family = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
            print(f"{devices.describe(half, device)}; "
                  + (f"CPU fast paths: {', '.join(paths)}" if paths else f"plain PyTorch/transformers path ({family})")
                  + (f"; {distributed.world_size()} processes, {t.strategy}" if wrapped is not None else "")
                  + ("; gradient checkpointing" if t.gradient_checkpointing else "")
                  + f"; optimizer {kind}" + (" (auto)" if t.optimizer == "auto" else "")
                  + f"; allocator {preload.name()}", flush=True)
        while step < total_steps:
            tick = time.perf_counter()
            parts = [next(data) for _ in range(t.grad_accum)]
            if wrapped is None:
                batches = [devices.put(task.collate([train_set[i] for i in rows], pad_id), device)
                           for _, idx in parts for rows in passes(idx, lengths, cap)]
                weights = [1.0] * len(batches)
            else:  # this rank's share of each micro-batch; the global batch is the single-process one
                batches, weights = distributed.local_batches(
                    [idx for _, idx in parts], lambda ids: devices.put(task.collate([train_set[i] for i in ids], pad_id), device))
            step_targets = sum(task.count_targets(b) for b, w in zip(batches, weights) if w)
            if wrapped is not None:
                step_targets = int(distributed.all_reduce_sum(step_targets)[0])  # the GLOBAL supervised-token count
            loss_sum, step_tokens = 0.0, 0
            for n, (batch, weight) in enumerate(zip(batches, weights)):
                with devices.autocast(half, device), distributed.sync_grads(accel, ddp, last=n == len(batches) - 1):
                    nll, _, _ = task.token_stats(model, batch) if wrapped is None else wrapped(batch)
                # DDP and DeepSpeed average gradients over ranks; scaling by the world size makes that average a sum.
                scaled = nll * (weight * distributed.world_size()) / max(step_targets, 1)
                if engine is None:
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                else:
                    deepspeed_engine.backward(engine, scaled)  # on the last micro-batch this also steps the optimizer
                end_pass()  # the next pass's bf16 weight gradients add in fp32 (kernels/linear.py)
                loss_sum += float(nll.detach()) * weight
                real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
                step_tokens += int(real * weight)
            if wrapped is not None:
                loss_sum, step_tokens = distributed.all_reduce_sum(loss_sum, step_tokens)
                step_tokens = int(step_tokens)
            window_tokens += step_tokens
            all_tokens += step_tokens
            if engine is None:
                densify(model)
                if scaler is not None:
                    grad_norm = scaled_clip_and_step(model, optimizer, t.max_grad_norm or float("inf"), scaler)
                    if sharded:
                        grad_norm = distributed.full_value(grad_norm)
                elif wrapped is None and not sharded:
                    grad_norm = clip_and_step(model, optimizer, t.max_grad_norm or float("inf"))
                else:
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm or float("inf"))
                    if sharded:
                        grad_norm = distributed.full_value(grad_norm)
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            else:  # DeepSpeed clipped (gradient_clipping), stepped and zeroed the gradients in its step()
                grad_norm = deepspeed_engine.grad_norm(engine)
            scheduler.step()
            step += 1
            if fast:
                keep_within_cap()  # train.retain_memory_mb: what the step freed is kept up to the cap
            loss = loss_sum / max(step_targets, 1)
            spent = time.perf_counter() - tick  # training compute only: validation and saving excluded
            window_time += spent
            train_time += spent

            bar.update(1)
            if main and (step % t.log_every == 0 or step == total_steps):
                rate = window_tokens / max(window_time, 1e-9)
                window_tokens, window_time = 0, 0.0
                peak = devices.peak_memory_mb(device)
                record({"step": step, "split": "train", "loss": loss, "lr": float(scheduler.get_last_lr()[0]),
                        "grad_norm": float(grad_norm), "tokens_per_second": rate, "epoch": parts[-1][0],
                        "peak_memory_mb": round(peak, 1)})
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:.0f}", lr=f"{float(scheduler.get_last_lr()[0]):.1e}",
                                mem=f"{peak / 1024:.1f}G")

            if (t.eval_every and step % t.eval_every == 0) or step == total_steps:
                stopped_early = validate()
            if (main or sharded or engine is not None) and (stopped_early or step == total_steps or (t.save_every and step % t.save_every == 0)):
                save_checkpoint(run_dir, step, model, tokenizer, optimizer, scheduler,
                                {k: state[k] for k in ("best", "best_val_loss", "best_step", "bad_evals")}, config_yaml,
                                engine=engine)
            if stopped_early:
                if main:
                    patience_ran_out = bool(t.patience) and state["bad_evals"] >= t.patience
                    bar.write(f"early stopping at step {step}: " + (f"no improvement in {t.patience} validations"
                              if patience_ran_out else "on_validation asked to stop (a pruned search trial)"))
                break
    bar.close()
    if engine is None:  # the last checkpoint holds the optimizer state: gone before the caller evaluates
        optimizer.state.clear()
    if fast:
        release_freed_memory()
    if t.gradient_checkpointing:
        model.activation_checkpointing_disable()
    seconds = time.perf_counter() - started
    return TrainResult(step, state["best_val_loss"], state["best_step"], stopped_early, all_tokens / max(train_time, 1e-9),
                       seconds, str(device), devices.precision_name(half), round(devices.peak_memory_mb(device), 1))
