#!/usr/bin/env bash
# tailor on a CUDA machine: the gpu-marked tests, the demo config, tailor's training loop against the HF
# Trainer on the GPU (and where a step's time goes), a DDP run, batched generation and one served request, each printing tokens/s and
# the GPU's peak memory. Run from the repository root with tailor installed (make install, or
# pip install -e . beside the machine's own torch):
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]
#
# Exits non-zero at the first step that fails. Settings, from the environment:
#   MODEL=PATH        another model folder than the embedded SmolLM2-135M-Instruct (model.name)
#   STEPS=N           optimizer steps of the HF-vs-tailor training comparison (default 60 after 10 warm-up steps, batch 8)
#   DEVICE=cpu        the same steps on the CPU (to try the script on a machine without a GPU)
#   SETTINGS="k=v .." more config overrides for the demo and DDP runs (e.g. smaller data caps)
set -euo pipefail
PY=${PY:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python3)}
OUT=${1:-${OUT:-/tmp/tailor-gpu-check}}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-60}
WARMUP=${WARMUP:-10}
read -r -a OVERRIDES <<< "${MODEL:+model.name=$MODEL} ${SETTINGS:-}"
mkdir -p "$OUT"
if [ "$DEVICE" = cuda ]; then
  GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
  if [ "$GPUS" -lt 1 ]; then echo "gpu_check: torch sees no CUDA GPU" >&2; exit 1; fi
  $PY -c "import torch; p = torch.cuda.get_device_properties(0); print(f'{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, bf16 {torch.cuda.is_bf16_supported()}')"
  echo "== gpu-marked tests"
  $PY -m pytest -q -m gpu tests/gpu -p no:cacheprovider
else
  GPUS=1
fi

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

echo "== demo config (tailor run, device $DEVICE)"
START=$(date +%s)
$PY -m tailor.cli run configs/dialogue/smollm2-chitchat.yaml --device "$DEVICE" name=gpu-demo output_dir="$OUT" \
    "${OVERRIDES[@]}" --overwrite > "$OUT/demo.log" 2>&1 || { tail -40 "$OUT/demo.log"; exit 1; }
echo "tailor run: $(( $(date +%s) - START )) s in all"
summary "$OUT/gpu-demo" "demo, $DEVICE"
grep -E "perplexity|bleu|BLEU|chrF" "$OUT/demo.log" | tail -6 || true

echo "== where a plain training step's time goes (launch latency, GPU time against wall time)"
$PY benchmarks/gpu_step.py --device "$DEVICE" ${MODEL:+--model "$MODEL"} 2>&1 | grep -v "Loading weights" | head -12

echo "== training: the HF Trainer vs tailor's loop, $STEPS steps of 8 samples"
TAILOR_BENCH_MODEL=${MODEL:-} $PY benchmarks/train_throughput.py --device "$DEVICE" --steps "$STEPS" --warmup "$WARMUP" \
    2>&1 | tee "$OUT/train_throughput.log" | grep -v "^  " || { tail -40 "$OUT/train_throughput.log"; exit 1; }

NPROC=$(( GPUS >= 2 ? 2 : 1 ))
echo "== DDP: torchrun, $NPROC process(es), one GPU each"
$PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m tailor.cli train \
    configs/dialogue/smollm2-chitchat.yaml --device "$DEVICE" name=gpu-ddp output_dir="$OUT" "${OVERRIDES[@]}" --overwrite \
    > "$OUT/ddp.log" 2>&1 || { tail -40 "$OUT/ddp.log"; exit 1; }
summary "$OUT/gpu-ddp" "DDP, $NPROC process(es) on $DEVICE (rank 0's memory)"

echo "== generation: 64 prompts, batch 8, 64 new tokens"
$PY - "$OUT/gpu-demo" "$DEVICE" <<'PYEOF'
import sys, time, torch
from tailor import device as devices
from tailor.generate.replies import generate
from tailor.runs import load_run
devices.choose(sys.argv[2])
cfg, model, tok = load_run(sys.argv[1])
cfg.decode.max_new_tokens, cfg.decode.batch_size = 64, 8
prompts = [tok.apply_chat_template([{"role": "user", "content": f"Tell me about day {i}."}], add_generation_prompt=True)
           for i in range(64)]
prompts = [p["input_ids"] if hasattr(p, "keys") else p for p in prompts]
generate(model, tok, prompts[:8], cfg.decode, True)  # warm-up
devices.reset_peak_memory(); devices.synchronize(); t = time.perf_counter()
out = generate(model, tok, prompts, cfg.decode, True)
devices.synchronize(); s = time.perf_counter() - t
new = sum(r["tokens"] for r in out)
print(f"generation: {new / s:.0f} new tok/s ({new} tokens, {s:.1f} s), peak {devices.peak_memory_mb():.0f} MB")
PYEOF

echo "== serving: one chat request through tailor serve --device $DEVICE"
PORT=$($PY -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
$PY -m tailor.cli serve "$OUT/gpu-demo" --device "$DEVICE" --port "$PORT" > "$OUT/serve.log" 2>&1 &
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
