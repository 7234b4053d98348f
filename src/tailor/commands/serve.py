"""tailor serve RUN_DIR: an OpenAI-compatible API and a chat page for a run's model.

Routes: /v1/chat/completions and /v1/completions (streamed with "stream": true), /v1/models,
/v1/classify (classifier runs), /health, and the chat page at /. Binds 127.0.0.1 unless --host
says otherwise. With TAILOR_API_KEY set (or --api-key-file) every /v1 route needs
'Authorization: Bearer <key>'. Only safetensors weights are loaded.
"""

from __future__ import annotations

import ipaddress
import os
import sys

NAME = "serve"
HELP = "serve a run's model over an OpenAI-compatible HTTP API with a chat page"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder (runs/<name>), model folder or adapter folder")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key-file", default=None,
                        help="file holding the API key clients must send (default: $TAILOR_API_KEY; none: no key)")
    parser.add_argument("--max-tokens", type=int, default=512, help="most tokens one request may generate")
    parser.add_argument("--max-prompt-tokens", type=int, default=2048, help="longest prompt accepted, in tokens")
    parser.add_argument("--max-batch", type=int, default=8, help="requests generated together")
    parser.add_argument("--max-queue", type=int, default=32, help="requests waiting before the server answers 429")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a request is abandoned (504)")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="weights to decode with (auto: as `tailor generate` does, the run's train.precision: "
                             "bf16 where this machine has it)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for generation (0: torch's default; 1 is best on a busy machine)")


def api_key(args) -> str | None:
    from tailor.errors import TailorError

    if args.api_key_file:
        try:
            key = open(args.api_key_file).read().strip()
        except OSError as e:
            raise TailorError(f"cannot read the API key file {args.api_key_file}: {e.strerror}.") from None
        if not key:
            raise TailorError(f"the API key file {args.api_key_file} is empty.")
        return key
    return os.environ.get("TAILOR_API_KEY") or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(args) -> int:
    import torch
    import uvicorn

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from tailor.runs import load
    from tailor.serve.app import Limits, create_app

    limits = Limits(max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens, max_batch=args.max_batch,
                    max_queue=args.max_queue, timeout=args.timeout)
    key = api_key(args)
    loaded = load(args.run, "float32" if args.dtype == "auto" else args.dtype, strict=False)
    if args.dtype == "auto" and loaded.kind == "generate":  # the weights `tailor generate` decodes with
        from dataclasses import replace

        from tailor.generate.replies import decode_bf16
        from tailor.precision import inference_model

        half = decode_bf16(loaded.model, loaded.cfg.train.precision, loaded.cfg.decode)
        loaded = replace(loaded, model=inference_model(loaded.model, half))
    app = create_app(loaded, limits, key)
    if not is_loopback(args.host) and not key:
        print(f"warning: serving on {args.host} without an API key: anyone who can reach it can use it "
              "(set TAILOR_API_KEY or --api-key-file)", file=sys.stderr)
    print(f"serving {loaded.name} ({loaded.kind}) at http://{args.host}:{args.port}/ "
          f"(API under /v1{', key required' if key else ''})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
