"""tailor chat RUN_DIR: talk to a fine-tuned model in the terminal, turn by turn.

Type a message and press Enter. /reset starts a new conversation, /exit (or Ctrl-D) quits.
"""

from __future__ import annotations

import sys

NAME = "chat"
HELP = "multi-turn chat in the terminal with a run's model"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder (runs/<name>) or model folder")
    parser.add_argument("--system", default=None, help="system prompt (default: the run's data.system_prompt)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="reply length limit")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--lookahead", type=int, default=None,
                        help="greedy: draft and check up to N tokens per step (decode.lookahead; 0 = off)")


def main(args) -> int:
    import dataclasses

    from tailor.generate.replies import decode_bf16
    from tailor.precision import inference_model
    from tailor.runs import load
    from tailor.tasks import dialogue

    loaded = load(args.run)
    cfg, model, tokenizer = loaded.cfg, loaded.model, loaded.tokenizer
    decode = dataclasses.replace(
        cfg.decode,
        max_new_tokens=args.max_new_tokens or max(cfg.decode.max_new_tokens, 128),
        do_sample=args.sample or cfg.decode.do_sample,
        batch_size=1,
        lookahead=cfg.decode.lookahead if args.lookahead is None else args.lookahead,
    )
    bf16 = decode_bf16(model, cfg.train.precision, decode)  # bf16 weights where they decode fastest
    model = inference_model(model.eval(), bf16)  # once, not at every reply
    system = args.system if args.system is not None else cfg.data.system_prompt
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    print("chat with the model: /reset starts over, /exit quits", flush=True)
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = history[:1] if system else []
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        reply = dialogue.reply(model, tokenizer, [history], decode, bf16, seed=decode.seed + len(history), desc="reply")[0]
        history.append({"role": "assistant", "content": reply["text"]})
        print(f"model> {reply['text']}", flush=True)
        sys.stdout.flush()
