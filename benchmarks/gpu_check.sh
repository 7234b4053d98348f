#!/usr/bin/env bash
# tailor on a CUDA machine: the demo config, a 2-process DDP run, batched generation and one served
# request, each printing tokens/s and the GPU's peak memory. Run from the repository root with tailor
# installed (make install, or pip install -e . beside the machine's own torch):
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Exits non-zero at the first step that fails; the gpu-marked tests run first.
set -euo pipefail
PY=${PY:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python)}
OUT=${1:-${OUT:-/tmp/tailor-gpu-check}}
mkdir -p "$OUT"
GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -lt 1 ]; then echo "gpu_check: torch sees no CUDA GPU" >&2; exit 1; fi
$PY -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, bf16 {torch.cuda.is_bf16_supported()}')"

echo "== gpu-marked tests"
$PY -m pytest -q -m gpu tests/gpu -p no:cacheprovider

summary() {  # RUN_DIR LABEL: tokens/s and peak memory from the run's train summary
  $PY - "$1" "$2" <<'PYEOF'
import json, sys
run, label = sys.argv[1], sys.argv[2]
t = json.load(open(f"{run}/train_summary.json"))["train"] if __import__("os").path.exists(f"{run}/train_summary.json") \
    else json.load(open(f"{run}/metrics.json"))["train"]
print(f"{label}: {t['tokens_per_second']:.0f} real tok/s, peak {t['peak_memory_mb']:.0f} MB on {t['device']} ({t['precision']}), "
      f"{t['steps']} steps in {t['seconds']:.0f} s")
PYEOF
}

echo "== demo config (tailor run, device cuda)"
$PY -m tailor.cli run configs/dialogue/smollm2-chitchat.yaml --device cuda name=gpu-demo output_dir="$OUT" --overwrite \
    > "$OUT/demo.log" 2>&1 || { tail -40 "$OUT/demo.log"; exit 1; }
summary "$OUT/gpu-demo" "demo, 1 GPU"

NPROC=$(( GPUS >= 2 ? 2 : 1 ))
echo "== DDP: torchrun, $NPROC process(es), one GPU each"
$PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m tailor.cli train \
    configs/dialogue/smollm2-chitchat.yaml --device cuda name=gpu-ddp output_dir="$OUT" --overwrite \
    > "$OUT/ddp.log" 2>&1 || { tail -40 "$OUT/ddp.log"; exit 1; }
summary "$OUT/gpu-ddp" "DDP, $NPROC GPU(s) (rank 0's memory)"

echo "== generation: 64 prompts, batch 8, 64 new tokens"
$PY - "$OUT/gpu-demo" <<'PYEOF'
import sys, time, torch
from tailor import device as devices
from tailor.generate.replies import generate
from tailor.runs import load_run
devices.choose("cuda")
cfg, model, tok = load_run(sys.argv[1])
cfg.decode.max_new_tokens, cfg.decode.batch_size = 64, 8
prompts = [tok.apply_chat_template([{"role": "user", "content": f"Tell me about day {i}."}], add_generation_prompt=True)
           for i in range(64)]
prompts = [p["input_ids"] if hasattr(p, "keys") else p for p in prompts]
generate(model, tok, prompts[:8], cfg.decode, True)  # warm-up
torch.cuda.reset_peak_memory_stats(); devices.synchronize(); t = time.perf_counter()
out = generate(model, tok, prompts, cfg.decode, True)
devices.synchronize(); s = time.perf_counter() - t
new = sum(r["tokens"] for r in out)
print(f"generation: {new / s:.0f} new tok/s ({new} tokens, {s:.1f} s), peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")
PYEOF

echo "== serving: one chat request through tailor serve --device cuda"
PORT=$($PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
$PY -m tailor.cli serve "$OUT/gpu-demo" --device cuda --port "$PORT" > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
$PY - "$PORT" <<'PYEOF'
import sys, time, httpx
base = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(240):
    try:
        if httpx.get(f"{base}/health", timeout=2).status_code == 200:
            break
    except httpx.HTTPError:
        time.sleep(0.5)
t = time.perf_counter()
r = httpx.post(f"{base}/v1/chat/completions", timeout=120,
               json={"messages": [{"role": "user", "content": "Hi! How was your weekend?"}], "max_tokens": 64})
s = time.perf_counter() - t
r.raise_for_status()
n = r.json()["usage"]["completion_tokens"]
print(f"served request: {n} tokens in {s:.2f} s ({n / s:.0f} tok/s); reply: {r.json()['choices'][0]['message']['content'][:80]!r}")
PYEOF
echo "gpu_check: all steps passed; logs in $OUT"
