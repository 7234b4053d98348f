"""Load test of `tailor serve`, run by hand: N concurrent chat clients against a loopback server.

    python benchmarks/load_test.py runs/<name> --clients 8 --requests 4 --max-tokens 32

Starts `tailor serve RUN` on a free 127.0.0.1 port in a subprocess (or, with --url, uses a server
already running on this machine: loopback addresses only), then runs --clients clients, each
sending --requests streamed chat completions one after another. Bounded: at most clients x requests
(hard cap 2,000) requests, and no new request after --time-limit seconds. A warm-up round runs
first; the server's resident memory is sampled after it and again after each of --rounds rounds, so
growth between rounds shows a leak. Prints (and with --json writes) the figures: requests, errors,
latency p50/p99, time to first token p50/p99, completion tokens/s, largest batch, memory. Exits 1 if
any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx

MAX_REQUESTS = 2000
QUESTIONS = [
    "Hi! How was your weekend?", "What is your favourite food?", "Do you like travelling?",
    "Tell me about your job.", "What music do you listen to?", "Any plans for the holidays?",
    "Have you read a good book lately?", "What did you have for breakfast?",
]


def loopback_only(url: str) -> str:
    host = urlparse(url).hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok:
        sys.exit(f"load_test targets this machine only (127.0.0.0/8, ::1, localhost), not {host!r}")
    return url.rstrip("/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "tailor.cli", "serve", run, "--port", str(port), "--max-batch", str(args.max_batch),
           "--max-queue", str(max(args.clients * 2, 32)), "--max-tokens", str(max(args.max_tokens, 16)),
           "--timeout", str(args.request_timeout), "--threads", str(args.threads)]
    env = {k: v for k, v in os.environ.items() if k != "TAILOR_API_KEY"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(base + "/health", timeout=5).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.terminate()
    sys.exit("the server did not start within 300 s")


async def one_request(client: httpx.AsyncClient, model: str, question: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = None
    tokens = 0
    done = False
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            return {"error": f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"}
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            if "error" in event:
                return {"error": event["error"]["message"]}
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            if first is None and event["choices"] and event["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - start
    if not done:
        return {"error": "the stream ended without [DONE]"}
    return {"latency": time.perf_counter() - start, "ttft": first, "tokens": tokens}


async def round_of(base: str, model: str, clients: int, requests: int, max_tokens: int, deadline: float, headers: dict) -> tuple[list, float]:
    async def client_loop(c: int, client: httpx.AsyncClient) -> list:
        out = []
        for i in range(requests):
            if time.monotonic() > deadline:
                break
            try:
                out.append(await one_request(client, model, QUESTIONS[(c + i) % len(QUESTIONS)], max_tokens))
            except httpx.HTTPError as e:
                out.append({"error": f"{type(e).__name__}: {e}"})
        return out

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(600), limits=limits, headers=headers) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(client_loop(c, client) for c in range(clients)))
        wall = time.perf_counter() - start
    return [r for rs in results for r in rs], wall


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))]


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="run or model folder to serve (omit with --url)")
    p.add_argument("--url", help="a tailor server already running on this machine (loopback only)")
    p.add_argument("--pid", type=int, help="with --url: the server's process id, for memory figures")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=4, help="requests per client per round")
    p.add_argument("--rounds", type=int, default=2, help="measured rounds (memory is compared between them)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--max-batch", type=int, default=8, help="server's batch size when this script starts it")
    p.add_argument("--threads", type=int, default=0, help="server's torch threads when this script starts it (0: default)")
    p.add_argument("--time-limit", type=float, default=600, help="no new request after this many seconds")
    p.add_argument("--request-timeout", type=float, default=300)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    if args.clients < 1 or args.requests < 1 or args.rounds < 1:
        sys.exit("--clients, --requests and --rounds must be at least 1")
    if args.clients * args.requests * (args.rounds + 1) > MAX_REQUESTS:
        sys.exit(f"at most {MAX_REQUESTS} requests in all (clients x requests x (rounds + 1 warm-up))")
    if bool(args.run) == bool(args.url):
        sys.exit("give a run folder to serve, or --url of a running server")
    proc = None
    if args.url:
        base, pid = loopback_only(args.url), args.pid
    else:
        proc, base = start_server(args.run, args)
        pid = proc.pid
    headers = {"Authorization": f"Bearer {os.environ['TAILOR_API_KEY']}"} if args.url and os.environ.get("TAILOR_API_KEY") else {}
    try:
        model = httpx.get(base + "/v1/models", headers=headers, timeout=30).json()["data"][0]["id"]
        deadline = time.monotonic() + args.time_limit
        memory = {"start_mb": rss_mb(pid)}
        warm, _ = asyncio.run(round_of(base, model, args.clients, 1, args.max_tokens, deadline, headers))
        memory["after_warmup_mb"] = rss_mb(pid)
        results, wall = [], 0.0
        for r in range(args.rounds):
            got, seconds = asyncio.run(round_of(base, model, args.clients, args.requests, args.max_tokens, deadline, headers))
            results += got
            wall += seconds
            memory[f"after_round_{r + 1}_mb"] = rss_mb(pid)
        health = httpx.get(base + "/health", timeout=30).json()
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    ok = [r for r in results if "latency" in r]
    errors = [r["error"] for r in results + warm if "error" in r]
    latencies = [r["latency"] for r in ok]
    ttfts = [r["ttft"] for r in ok if r["ttft"] is not None]
    tokens = sum(r["tokens"] for r in ok)
    rounds_mb = [memory[f"after_round_{r + 1}_mb"] for r in range(args.rounds)]
    figures = {
        "model": model, "clients": args.clients, "requests": len(results), "warmup_requests": len(warm),
        "errors": len(errors), "max_tokens": args.max_tokens,
        "latency_p50_s": round(pct(latencies, 50), 3), "latency_p99_s": round(pct(latencies, 99), 3),
        "ttft_p50_s": round(pct(ttfts, 50), 3), "ttft_p99_s": round(pct(ttfts, 99), 3),
        "completion_tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 2) if wall else None,
        "requests_per_s": round(len(ok) / wall, 3) if wall else None,
        "largest_batch": health.get("largest_batch"),
        "memory_mb": {k: (round(v, 1) if v is not None else None) for k, v in memory.items()},
        "memory_growth_between_rounds_mb": round(rounds_mb[-1] - rounds_mb[0], 1) if None not in rounds_mb else None,
    }
    print(json.dumps(figures, indent=2))
    for e in errors[:5]:
        print("error:", e, file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
