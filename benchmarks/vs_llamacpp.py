"""Batch-1 greedy decoding, tailor vs a real llama.cpp, on the same model and prompts, in one run.

    .venv/bin/python benchmarks/vs_llamacpp.py [--tokens 64] [--prompts 4] [--threads N]

The model is SmolLM2-135M-Instruct (embedded). It is exported by tailor to an f16 GGUF, which llama.cpp
(the pinned llama-cpp-cffi CPU build that `make test` sets up in .llamacpp/, an AVX2 build) decodes
with ../shared/tools/llamacpp/speed.py: the prompts are llamacpp.PROMPTS with SmolLM2's default system
turn, each decoded to exactly --tokens new tokens, one token per step; new tokens/s excludes the prompt.
tailor decodes the same prompts (rendered by the HF chat template, which adds the same system turn) on
its bf16 weights with its own decoder (generate/decoder.py on the lean cache; on a CPU without native bf16 it computes
in fp32 on those weights, as llama.cpp does on f16 ones), exactly --tokens tokens, one token per step and
with the default lookahead 4; its new tokens/s is (time for --tokens tokens - time for 1 token) / (--tokens - 1), so the
prompt is left out the same way. Medians over the prompts. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TOOLS = Path(os.environ.get("LLAMACPP_TOOLS") or ROOT.parent / "shared" / "tools" / "llamacpp")


def llama_cpp(gguf: Path, tokens: int, prompts: int, threads: int) -> dict:
    env = {**os.environ, "LLAMACPP_RUNTIME": os.environ.get("LLAMACPP_RUNTIME", str(ROOT / ".llamacpp"))}
    out = subprocess.run([sys.executable, str(TOOLS / "speed.py"), str(gguf), "--tokens", str(tokens),
                          "--prompts", str(prompts), "--threads", str(threads)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tailor_speed(model, tokenizer, prompts: list[list[int]], tokens: int, lookahead: int) -> float:
    """tailor's decoder (generate/decoder.py, what `tailor generate` runs on Llama-family models) on one prompt at
    a time; an end-of-sequence id no token has, so every prompt makes exactly `tokens` tokens, as speed.py's."""
    from transformers import GenerationConfig

    from tailor.generate.decoder import decode

    never = len(tokenizer) + 1000

    def timed(n: int, ids: list[int]) -> float:
        gen = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=[never], pad_token_id=tokenizer.pad_token_id)
        x = torch.tensor([ids])
        start = time.perf_counter()
        out = decode(model, x, torch.ones_like(x), gen, draft=lookahead)
        assert out.shape == (1, n), out.shape
        return time.perf_counter() - start

    timed(4, prompts[0])  # warm-up: the kernel's packing and the caches
    return statistics.median((tokens - 1) / (timed(tokens, ids) - timed(1, ids)) for ids in prompts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sys.path.insert(0, str(TOOLS))
    import llamacpp  # the shared tool: its prompts

    from tailor.export.gguf_file import write_gguf
    from tailor.models.load import load
    from tailor.precision import inference_model

    model, tokenizer = load("smollm2-135m-instruct")
    prompts = [tokenizer.apply_chat_template(llamacpp.PROMPTS[i % len(llamacpp.PROMPTS)], add_generation_prompt=True,
                                             tokenize=False) for i in range(a.prompts)]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in prompts]
    with tempfile.TemporaryDirectory() as tmp:
        gguf = write_gguf(model, tokenizer, Path(tmp) / "smollm2.gguf", "f16")
        cpp = llama_cpp(gguf, a.tokens, a.prompts, a.threads)
    runner = inference_model(model.eval(), True)  # the bf16 copy tailor generates with
    one = tailor_speed(runner, tokenizer, prompts, a.tokens, lookahead=0)
    ahead = tailor_speed(runner, tokenizer, prompts, a.tokens, lookahead=4)
    from tailor.generate.lean import activations

    kind = "bf16" if activations(runner) == torch.bfloat16 else "bf16 weights, fp32 arithmetic"
    rows = [("llama.cpp f16 (AVX2 build), one token per step", cpp["gen_tok_s"]),
            (f"tailor {kind}, one token per step (lookahead 0)", one),
            (f"tailor {kind}, default lookahead 4", ahead)]
    print(f"batch 1 greedy, {a.tokens} new tokens, {a.prompts} prompts, {a.threads} threads; {cpp['llama_cpp']}")
    for name, rate in rows:
        print(f"  {name:66} {rate:7.1f} new tok/s")
    print(f"  tailor / llama.cpp, one token per step: {one / cpp['gen_tok_s']:.2f}x")
    print(json.dumps({"llama_cpp_gen_tok_s": cpp["gen_tok_s"], "tailor_one_step_tok_s": round(one, 2),
                      "tailor_lookahead_tok_s": round(ahead, 2), "tailor_arithmetic": kind, "tokens": a.tokens, "prompts": a.prompts,
                      "threads": a.threads}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
