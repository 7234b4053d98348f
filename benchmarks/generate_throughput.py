"""Generation speed: HF `model.generate` on bf16 (or, with --precision fp32, fp32) weights vs tailor's generation path.

    .venv/bin/python benchmarks/generate_throughput.py --prompts 2

New tokens/s at batch 1 and batch 8, 64 new tokens per row, greedy and sampling (temperature 0.7,
top-k 50, top-p 0.9), on chitchat test prompts. Both sides run in this one process, interleaved
batch by batch. HF gets the model as a user would load it for speed (`dtype=torch.bfloat16`);
tailor gets its fp32 training weights and makes its own bf16 copy (`precision.inference_model`),
whose one-off cost is printed apart, and decodes as `generate.replies` does (`generate.lean` for
Llama-family models). Greedy batch 1 is timed twice: one token per step, and with N drafted
tokens per step (`--lookahead N`, by default `decode.lookahead`'s default, which `tailor generate` and
chat use at batch 1); both are compared with HF's tokens. No stop token ends a row, so every row makes 64 tokens. Greedy
outputs are compared token for token. Each batch size starts with one untimed 2-token call per side; tailor's
(packing the weights for `kernels.Product`, checking its K blocks) is printed. `--precision` (default auto:
bf16 where the CPU has it natively, fp32 where it would be emulated) sets both sides' weights. With
`--tailor-weights deploy` tailor decodes instead on the weights `tailor generate` picks here
(`generate.replies.decode_bf16`: on a CPU with AVX-512 but no native bf16, bf16 weights in fp32 arithmetic) while
HF keeps --precision's: each side as its user gets it. Greedy rows are then compared for information only where
the weights differ.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, GenerationConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MODEL, add_precision, config, half, machine, model_and_samples  # noqa: E402

from tailor.config.decode import DecodeConfig  # noqa: E402
from tailor.data.tokenize import prompt_ids  # noqa: E402
from tailor.generate.decoder import decode  # noqa: E402
from tailor.generate.replies import decode_bf16  # noqa: E402
from tailor.models.load import resolve  # noqa: E402
from tailor.precision import inference_model  # noqa: E402

NEW = 64


def left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    return ids, mask


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=2, help="batches timed per batch size and mode")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--with-autocast", action="store_true",
                   help="also time HF generate on the fp32 weights under bf16 autocast (tailor's path before generate.fast)")
    p.add_argument("--lookahead", type=int, default=DecodeConfig().lookahead,
                   help="also time greedy batch 1 with this many drafted tokens (default: decode.lookahead's default; 0 = no)")
    p.add_argument("--tailor-weights", choices=["same", "deploy"], default="same",
                   help="same: tailor on --precision's weights, as HF; deploy: on those `tailor generate` decodes with here")
    add_precision(p)
    a = p.parse_args()
    bf16 = half(a.precision)
    if a.threads:
        torch.set_num_threads(a.threads)
    model, tokenizer, splits = model_and_samples(config(max_length=256, test=8 * a.prompts + a.prompts))
    ours_bf16 = decode_bf16(model, "auto", DecodeConfig()) if a.tailor_weights == "deploy" else bf16
    print(machine() + f"; HF on {'bf16' if bf16 else 'fp32'} weights, tailor on {'bf16' if ours_bf16 else 'fp32'}")
    hf = AutoModelForCausalLM.from_pretrained(resolve(MODEL), dtype=torch.bfloat16 if bf16 else torch.float32, attn_implementation="sdpa").eval()
    tick = time.perf_counter()
    ours = inference_model(model, bf16=ours_bf16)
    print(f"tailor's {'bf16 copy' if ours_bf16 else 'inference model'} of the fp32 weights: {time.perf_counter() - tick:.2f} s once per generate() call")
    prompts = [prompt_ids(tokenizer, s["messages"][:-1]) for s in splits.test]
    # An id no token has: no row stops, every row makes NEW tokens on both sides.
    never = len(tokenizer) + 1000
    greedy = GenerationConfig(max_new_tokens=NEW, do_sample=False, eos_token_id=[never], pad_token_id=tokenizer.pad_token_id)
    sample = GenerationConfig(max_new_tokens=NEW, do_sample=True, temperature=0.7, top_k=50, top_p=0.9,
                              eos_token_id=[never], pad_token_id=tokenizer.pad_token_id)
    summary = {}
    for batch in (1, 8):
        chunks = [prompts[i * batch:(i + 1) * batch] for i in range(a.prompts)]
        # One untimed call per side at this batch size: one-off costs (tailor packs its weights for the
        # decoding kernel and finds its K blocks; both sides warm their allocators) are timed apart.
        ids, mask = left_pad(chunks[0], tokenizer.pad_token_id)
        warm = GenerationConfig(**{**greedy.to_dict(), "max_new_tokens": 2})
        with torch.inference_mode():
            hf.generate(input_ids=ids, attention_mask=mask, generation_config=warm)
        tick = time.perf_counter()
        decode(ours, ids, mask, warm)
        print(f"batch {batch}: tailor's first call (weights packed, K blocks checked) {time.perf_counter() - tick:.2f} s")
        for name, gen in (("greedy", greedy), ("sampling", sample)):
            time_hf = time_ours = time_autocast = time_ahead = 0.0
            same_ahead = 0
            tokens, same, rows = 0, 0, 0
            for chunk in chunks:
                ids, mask = left_pad(chunk, tokenizer.pad_token_id)
                torch.manual_seed(0)
                tick = time.perf_counter()
                with torch.inference_mode():
                    want = hf.generate(input_ids=ids, attention_mask=mask, generation_config=gen)[:, ids.shape[1]:]
                time_hf += time.perf_counter() - tick
                torch.manual_seed(0)
                tick = time.perf_counter()
                got = decode(ours, ids, mask, gen)
                time_ours += time.perf_counter() - tick
                if a.lookahead and batch == 1 and name == "greedy":
                    tick = time.perf_counter()
                    ahead = decode(ours, ids, mask, gen, draft=a.lookahead)
                    time_ahead += time.perf_counter() - tick
                    same_ahead += int((want == ahead).all(-1).sum())
                if a.with_autocast:
                    tick = time.perf_counter()
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                        model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
                    time_autocast += time.perf_counter() - tick
                assert want.shape == got.shape == (len(chunk), NEW), (want.shape, got.shape)
                tokens += got.numel()
                same += int((want == got).all(-1).sum())
                rows += len(chunk)
            line = (f"batch {batch} {name:8s}  HF {tokens / time_hf:6.1f} new tok/s   tailor {tokens / time_ours:6.1f}"
                    f"   ratio {time_hf / time_ours:.2f}x")
            if a.with_autocast:
                line += f"   (HF under autocast on fp32 weights {tokens / time_autocast:6.1f})"
            if name == "greedy":
                line += f"   identical rows {same}/{rows}" + ("" if ours_bf16 == bf16 else " (different weights)")
            print(line, flush=True)
            summary[(batch, name)] = time_hf / time_ours
            if time_ahead:
                summary[(batch, f"greedy+lookahead {a.lookahead}")] = time_hf / time_ahead
                print(f"batch 1 greedy, lookahead {a.lookahead}: tailor {tokens / time_ahead:6.1f} new tok/s   "
                      f"ratio {time_hf / time_ahead:.2f}x   identical rows {same_ahead}/{rows}"
                      + ("" if ours_bf16 == bf16 else " (different weights)"), flush=True)
    print("ratios: " + ", ".join(f"batch {b} {n} {r:.2f}x" for (b, n), r in summary.items()))
    print(machine())


if __name__ == "__main__":
    main()
