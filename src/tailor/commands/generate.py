"""tailor generate RUN_OR_MODEL --prompt TEXT [--prompt TEXT ...] | --file PROMPTS [decode.key=value ...]

Batched generation with the run's decoding settings (its `decode` section), changed by dotted
overrides, e.g. `decode.num_beams=4 decode.length_penalty=0.8` or `decode.do_sample=true
decode.temperature=0.9 decode.seed=3`. PROMPTS is a .txt file (one user message per line) or a
.jsonl file of {"prompt": ...} or {"messages": [...]} objects. --output writes JSONL.
"""

from __future__ import annotations

import sys

NAME = "generate"
HELP = "generate replies to prompts with a run's model and decoding settings (batched)"


def add_arguments(parser) -> None:
    parser.add_argument("run", help="run folder, model folder or model name (e.g. smollm2-135m-instruct)")
    parser.add_argument("overrides", nargs="*", help="decoding overrides, e.g. decode.num_beams=4 decode.max_new_tokens=32")
    parser.add_argument("--prompt", action="append", default=[], help="a user message (repeat for several)")
    parser.add_argument("--file", default=None, help="prompts: .txt (one per line) or .jsonl ({'prompt'} or {'messages'})")
    parser.add_argument("--system", default=None, help="system prompt (default: the run's data.system_prompt)")
    parser.add_argument("--output", default=None, help="write the replies as JSONL here")


def main(args) -> int:
    import json

    from tailor.errors import TailorError
    from tailor.fsutil import write_text
    from tailor.generate.inputs import decode_with_overrides, prompt_tokens, read_prompts, with_system_prompt
    from tailor.generate.replies import decode_bf16, generate
    from tailor.precision import use_half
    from tailor.runs import load
    from tailor.tasks import dialogue

    if not args.prompt and not args.file:
        raise TailorError("give prompts with --prompt TEXT (repeatable) or --file PROMPTS.")
    system = load(args.run, names=True)
    if system.kind == "classify":
        raise TailorError(f"{args.run} is a classifier, which labels texts and does not generate; use tailor eval or "
                          "tailor serve (POST /v1/classify).")
    decode = decode_with_overrides(system.cfg, args.overrides)
    records = [{"messages": [{"role": "user", "content": p}], "origin": f"--prompt {i + 1}"} for i, p in enumerate(args.prompt)]
    if args.file:
        records += read_prompts(args.file)
    records = with_system_prompt(records, args.system if args.system is not None else system.cfg.data.system_prompt)
    if system.kind == "seq2seq":  # the encoder reads the rendered history
        replies = dialogue.reply(system.model, system.tokenizer, [r["messages"] for r in records], decode,
                                 use_half(system.cfg.train.precision), seed=decode.seed, desc="generate")
    else:
        prompts = [prompt_tokens(system.tokenizer, r["messages"]) for r in records]
        replies = generate(system.model, system.tokenizer, prompts, decode,
                           decode_bf16(system.model, system.cfg.train.precision, decode), seed=decode.seed, desc="generate")
    rows = [{"messages": r["messages"], **({"reference": r["reference"]} if "reference" in r else {}),
             "reply": out["text"], "tokens": out["tokens"], "stopped": out["stopped"]} for r, out in zip(records, replies)]
    if args.output:
        write_text(args.output, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    for i, row in enumerate(rows, 1):
        print(f"--- {i}: {row['messages'][-1]['content']}")
        print(row["reply"] + ("" if row["stopped"] else "  [cut at max_new_tokens]"))
    print(f"{len(rows)} replies, decoding: {decode.strategy}" + (f"; written to {args.output}" if args.output else ""),
          file=sys.stderr)
    return 0
