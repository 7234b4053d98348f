"""Cost as the model grows: tailor vs the HF Trainer on random-initialised models with SmolLM2's shapes.

    .venv/bin/python benchmarks/scale.py                                   # 135m, 360m, 1.7b; 6 steps each
    .venv/bin/python benchmarks/scale.py --sizes 135m --steps 2 --warmup 0  # a quick check
    .venv/bin/python benchmarks/scale.py --sizes 1.7b --gradient-checkpointing --optimizer adamw_8bit --layers 2,4

Each size is a transformers LlamaConfig with SmolLM2's published shapes (no download; 49,152-token vocabulary,
tied embeddings, head dim 64), initialised from seed 0, trained on the same chitchat samples (tokenized with
SmolLM2's tokenizer) as `train_throughput.py` trains: batch 8, max length 256, lr 1e-4, cosine, bf16
autocast (--precision), fp32 weights and AdamW state, clipping 1.0. Each side of each size runs in its own process, so
each peak RSS is its own: HF's on glibc's malloc, tailor's on mimalloc, as the `tailor` command runs
(`--hf-allocator` / `--tailor-allocator` change either, as in train_throughput.py). Printed per size and side: real tokens/s after --warmup, MFU (model FLOPs over
the bf16 matmul peak probed before and after the whole run, common.Peak), peak RSS, and beside it
parameters x 16 bytes (fp32 weights, gradients and AdamW's two moments): the floor of full fine-tuning.

Memory levers: --gradient-checkpointing (both sides recompute each layer in the backward pass), --lora RANK
(peft adapters on q_proj and v_proj on both sides, through tailor's own `adapt`; MFU then counts 2 passes,
forward and input gradients, instead of 3), --optimizer adamw_8bit | adamw_4bit (AdamW's moments quantized by
torchao: tailor's train.optimizer, the Trainer's adamw_torch_8bit / 4bit). A paged optimizer is CUDA-only.
--precision: auto (default) trains in bf16 where the CPU has it natively and in fp32 where it would be emulated.

--layers N[,M]: the size's shapes with N decoder layers instead of all of them, to measure a size whose full
depth does not fit this machine: with two counts, peak RSS is fitted as a + b x layers and projected to the
full depth. A side whose weights, gradients and optimizer state alone exceed the memory available now is
skipped with a note (--force runs it anyway).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (MODEL, Peak, add_precision, add_side_options, config, emit, half, machine,  # noqa: E402
                    run_child, tailor_settings, train_hf, train_tailor)

BATCH, LR, WARMUP_STEPS, WEIGHT_DECAY, VAL = 8, 1e-4, 1, 0.01, 8
VOCAB = 49152

# SmolLM2's config.json per size (HuggingFaceTB/SmolLM2-{135M,360M,1.7B}): all tie the LM head to the embeddings.
SIZES = {
    "135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                 intermediate_size=1536, rope_theta=100000.0),
    "360m": dict(hidden_size=960, num_hidden_layers=32, num_attention_heads=15, num_key_value_heads=5,
                 intermediate_size=2560, rope_theta=100000.0),
    "1.7b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=8192, rope_theta=130000.0),
}


def llama_config(size: str, layers: int = 0):
    from transformers import LlamaConfig

    shape = dict(SIZES[size])
    theta = shape.pop("rope_theta")
    if layers:
        shape["num_hidden_layers"] = layers
    return LlamaConfig(vocab_size=VOCAB, tie_word_embeddings=True, max_position_embeddings=8192, rms_norm_eps=1e-5,
                       hidden_act="silu", bos_token_id=1, eos_token_id=2, pad_token_id=2,
                       rope_parameters={"rope_type": "default", "rope_theta": theta}, **shape)


def parameters(size: str, layers: int = 0) -> int:
    """Parameter count from the shapes alone (no model built)."""
    c = llama_config(size, layers)
    d, ff, kv = c.hidden_size, c.intermediate_size, c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * ff + 2 * d  # q, o, k, v, gate/up/down, two norms
    return VOCAB * d + c.num_hidden_layers * per_layer + d  # tied embeddings, final norm


def available_mb() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable"):
            return int(line.split()[1]) / 1024
    return float("inf")


def settings(a) -> dict:
    return dict(threads=a.threads, max_length=a.max_length, train=a.steps * BATCH, val=VAL, test=1,
                batch_size=BATCH, learning_rate=LR, weight_decay=WEIGHT_DECAY, schedule="cosine",
                warmup_steps=WARMUP_STEPS, max_grad_norm=1.0, precision="bf16" if half(a.precision) else "fp32",
                eval_every=0, save_every=0, log_every=1, gradient_checkpointing=a.gradient_checkpointing,
                optimizer=a.optimizer)


def side(a) -> dict:
    """One side of one size, in this (child) process."""
    from tailor.models.adapt import adapt
    from tailor.models.load import load_tokenizer, resolve
    from tailor.tasks.dialogue import prepare
    from transformers import LlamaForCausalLM

    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = config(**{**settings(a), **(tailor_settings(a.set) if a.side == "tailor" else {})})
    cfg.model.lora.rank = a.lora
    tokenizer = load_tokenizer(resolve(MODEL))  # SmolLM2's tokenizer (the embedded model's, converted once)
    splits = prepare(cfg, tokenizer, 8192)
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(a.size, a.layers))  # fp32, transformers' initialisation
    model = adapt(model, cfg.model, "causal", cfg.train.seed)  # LoRA with --lora, else every weight trains
    passes = 2 if a.lora else 3
    if a.optimizer != "adamw":  # torchao from wherever tailor finds it (lowbit.FOLDER), then the Trainer sees it too
        from tailor.train import lowbit
        from transformers.utils import import_utils

        lowbit.optimizer_class(a.optimizer)
        import_utils.is_torchao_available.cache_clear()
    if a.side == "hf":
        return train_hf(model, tokenizer, splits.train, a.steps, a.warmup, BATCH, LR, WEIGHT_DECAY, WARMUP_STEPS,
                        a.gradient_checkpointing, passes, half(a.precision), a.optimizer)
    return train_tailor(cfg, model, tokenizer, splits.train, splits.validation, a.warmup, passes, save=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="135m,360m,1.7b", help=f"comma-separated, of {', '.join(SIZES)}")
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per side (batch 8)")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of tokens/s")
    p.add_argument("--order", default="hf,tailor", help="sides to run per size, in this order")
    p.add_argument("--max-length", type=int, default=256, help="longest sample in tokens (longer ones are skipped)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="both sides recompute activations in backward")
    p.add_argument("--lora", type=int, default=0, metavar="RANK", help="train LoRA adapters of this rank (0 = full)")
    p.add_argument("--optimizer", choices=["adamw", "adamw_8bit", "adamw_4bit"], default="adamw",
                   help="both sides: AdamW, or its moments in 8 / 4 bits (torchao; the Trainer's adamw_torch_8bit / 4bit)")
    add_precision(p)
    p.add_argument("--layers", default="", help="N or N,M decoder layers instead of the size's own (memory projection)")
    p.add_argument("--threads", type=int, default=0, help="torch threads on both sides (0 = torch's default)")
    p.add_argument("--force", action="store_true", help="run sides whose state alone exceeds available memory")
    add_side_options(p, "retain_memory_mb=8192")
    p.add_argument("--side", choices=["hf", "tailor"], help=argparse.SUPPRESS)  # a child process
    p.add_argument("--size", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        a.layers = int(a.layers or 0)
        emit(side(a))
        return
    sizes = [s.strip().lower() for s in a.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"--sizes: unknown {', '.join(unknown)} (known: {', '.join(SIZES)})")
    depths = [int(x) for x in a.layers.split(",")] if a.layers else [0]
    if a.threads:
        torch.set_num_threads(a.threads)
    levers = [name for name, on in (("gradient checkpointing", a.gradient_checkpointing),
                                    (f"LoRA rank {a.lora}", a.lora), (a.optimizer, a.optimizer != "adamw")) if on]
    print(machine() + f"; {'bf16' if half(a.precision) else 'fp32'} on both sides")
    print(f"batch {BATCH}, max length {a.max_length}, {a.steps} steps ({a.warmup} left out of tokens/s); "
          f"levers: {', '.join(levers) or 'none (full fine-tuning)'}", flush=True)
    peak = Peak(half(a.precision))
    rows: list[tuple[str, int, str, dict | None, str]] = []  # size, layers, side, result, note
    for size in sizes:
        for layers in depths:
            n = parameters(size, layers)
            state = {"adamw": 8, "adamw_8bit": 2, "adamw_4bit": 1}[a.optimizer]  # bytes a parameter of AdamW's moments
            trainable_bytes = (8 + state) * n if not a.lora else 4 * n  # fp32 weights and gradients; LoRA: adapters are small
            for s in a.order.split(","):
                label = f"{size}" + (f" ({layers} layers)" if layers else "")
                if trainable_bytes / 2**20 > available_mb() and not a.force:
                    note = (f"skipped: weights, gradients and AdamW state alone take {trainable_bytes / 2**30:.1f} GiB, "
                            f"{available_mb() / 1024:.1f} GiB available (--force runs it)")
                    rows.append((size, layers, s, None, note))
                    print(f"{label:16s} {s:7s} {note}", flush=True)
                    continue
                args = ["--side", s, "--size", size, "--steps", str(a.steps), "--warmup", str(a.warmup),
                        "--threads", str(a.threads), "--max-length", str(a.max_length), "--lora", str(a.lora),
                        "--layers", str(layers), "--optimizer", a.optimizer, "--precision", a.precision
                        ] + (["--gradient-checkpointing"] if a.gradient_checkpointing else []) + [
                        arg for kv in a.set for arg in ("--set", kv)]
                r = run_child(__file__, args, timeout=6 * 3600,
                              allocator=a.hf_allocator if s == "hf" else a.tailor_allocator)
                rows.append((size, layers, s, r, ""))
                print(f"{label:16s} {s:7s} {r['tokens_per_s']:8.1f} real tok/s  peak RSS {r['peak_rss_mb']:7.0f} MB  "
                      f"(params x 16 B: {16 * n / 2**20:7.0f} MB)  last train loss {r['last_train_loss']:.3f}", flush=True)
    peak.after()
    print(peak.describe())
    print(f"\n{'size':16s} {'params':>8s} {'side':7s} {'tok/s':>8s} {'MFU':>6s} {'peak RSS MB':>11s} {'16 B/param MB':>13s}")
    for size, layers, s, r, note in rows:
        n = parameters(size, layers)
        label = size + (f" ({layers} layers)" if layers else "")
        if r is None:
            print(f"{label:16s} {n / 1e6:7.0f}M {s:7s} {note}")
            continue
        print(f"{label:16s} {n / 1e6:7.0f}M {s:7s} {r['tokens_per_s']:8.1f} {r['flops_per_s'] / 1e9 / peak.value:6.1%} "
              f"{r['peak_rss_mb']:11.0f} {16 * n / 2**20:13.0f}")
    for size in sizes:
        got = {(layers, s): r for sz, layers, s, r, _ in rows if sz == size and r is not None}
        for layers in depths:
            hf, tl = got.get((layers, "hf")), got.get((layers, "tailor"))
            if hf and tl:
                print(f"{size}{f' ({layers} layers)' if layers else ''}: tailor / HF speed "
                      f"{tl['tokens_per_s'] / hf['tokens_per_s']:.2f}x, peak RSS {tl['peak_rss_mb'] / hf['peak_rss_mb']:.2f}x")
        for s in dict.fromkeys(a.order.split(",")):
            if len(depths) == 2 and all((d, s) in got for d in depths):
                (d1, d2), full = depths, SIZES[size]["num_hidden_layers"]
                m1, m2 = got[(d1, s)]["peak_rss_mb"], got[(d2, s)]["peak_rss_mb"]
                per_layer = (m2 - m1) / (d2 - d1)
                print(f"{size} {s}: peak RSS {per_layer:.0f} MB per layer; projected at all {full} layers: "
                      f"{m1 + per_layer * (full - d1):.0f} MB")
    print(machine())


if __name__ == "__main__":
    main()
