"""tailor compare A B [--file PROMPTS | --data FILE] [decode.key=value ...]: two runs or models on the same prompts.

A and B are run folders, model folders or model names (e.g. smollm2-135m-instruct vs
runs/<name>). The prompts are --file (see `tailor generate`; lines with a reference give the
reference-based metrics and perplexity), --data (any file in the task's format, read as the task reads
its data, every record a test sample, as `tailor eval --data`) or else the test split of the first run
among A and B.
Both are decoded with that run's `decode` settings plus any overrides. Prints metrics of A and B,
B - A with paired bootstrap intervals, and outputs side by side; --output DIR writes
compare.json and compare.html (and `tailor abtest export DIR` makes a blind human-evaluation sheet).
"""

from __future__ import annotations

import dataclasses
import textwrap

NAME = "compare"
HELP = "compare two runs or models on the same prompts: metric deltas with bootstrap intervals"


def add_arguments(parser) -> None:
    parser.add_argument("a", help="run folder, model folder or model name (A, the baseline)")
    parser.add_argument("b", help="run folder, model folder or model name (B)")
    parser.add_argument("overrides", nargs="*", help="decoding overrides, e.g. decode.num_beams=4")
    parser.add_argument("--file", default=None, help="prompts (.txt or .jsonl); default: the test split of the first run")
    parser.add_argument("--data", default=None, metavar="FILE",
                        help="test samples from any file in the task's format instead of the run's test split")
    parser.add_argument("--samples", type=int, default=None, help="prompts compared (default: eval.generate_samples)")
    parser.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default: eval.bootstrap)")
    parser.add_argument("--show", type=int, default=3, help="outputs printed side by side")
    parser.add_argument("--output", default=None, help="folder for compare.json and compare.html")


def _same_tokenizer(x, y) -> bool:
    return x.get_vocab() == y.get_vocab() and getattr(x, "chat_template", None) == getattr(y, "chat_template", None)


def outputs_on_file(system, records: list[dict], cfg, bf16: bool, label: str) -> tuple[dict, list[dict]]:
    """(teacher-forced metrics or {}, replies) of one system on prompt-file records."""
    from tailor.data.tokenize import encode_fitting
    from tailor.errors import TailorError
    from tailor.eval.dialogue import evaluate
    from tailor.generate.inputs import prompt_tokens
    from tailor.generate.replies import generate

    if cfg.task == "dialogue" and all("reference" in r for r in records) and getattr(system.tokenizer, "chat_template", None):
        samples = []
        for r in records:
            sample = {"messages": r["messages"] + [{"role": "assistant", "content": r["reference"]}], "id": r["origin"],
                      "origin": r["origin"]}
            enc = encode_fitting(system.tokenizer, sample, cfg.model.max_length)
            if enc is None:
                raise TailorError(f"{r['origin']}: longer than model.max_length={cfg.model.max_length} tokens.")
            samples.append(enc)
        return evaluate(system.model, system.tokenizer, samples, cfg, bf16, label)
    prompts = [prompt_tokens(system.tokenizer, r["messages"]) for r in records]
    return {}, generate(system.model, system.tokenizer, prompts, cfg.decode, bf16, seed=cfg.decode.seed, desc=f"generate {label}")


def compare(a_spec: str, b_spec: str, overrides: list[str], file: str | None = None, samples: int | None = None,
            bootstrap: int | None = None, data: str | None = None) -> dict:
    from tailor.config import replace
    from tailor.errors import TailorError
    from tailor.eval.compare import bootstrap_deltas
    from tailor.generate.inputs import decode_with_overrides, read_prompts, with_system_prompt
    from tailor.models.load import context_length
    from tailor.precision import use_half
    from tailor.report.run import measure_records
    from tailor.runs import load
    from tailor.tasks import get_task

    if file and data:
        raise TailorError("--file gives prompts, --data gives test samples in the task's format; give one of them.")
    a, b = load(a_spec, names=True), load(b_spec, names=True)
    source = a if a.is_run else b if b.is_run else a
    cfg = source.cfg
    n = samples or cfg.eval.generate_samples
    cfg = replace(cfg, decode=decode_with_overrides(cfg, overrides), eval=dataclasses.replace(cfg.eval, generate_samples=n))
    bf16 = use_half(cfg.train.precision)
    if file:
        records = with_system_prompt(read_prompts(file), cfg.data.system_prompt)[:n]
        prompts_from = file
        (ma, ra), (mb, rb) = (outputs_on_file(s, records, cfg, bf16, lab) for s, lab in ((a, "A"), (b, "B")))
    else:
        if not source.is_run and not data:
            raise TailorError("neither A nor B is a run folder, so there is no test split to take prompts from; "
                              "give prompts with --file PROMPTS or test data with --data FILE.")
        task = get_task(cfg.task)
        if data:
            cfg = task.with_test_data(cfg, data, a.model)
        test_a = task.prepare(cfg, a.tokenizer, context_length(a.model)).test[:n]
        test_b = test_a if _same_tokenizer(a.tokenizer, b.tokenizer) else task.prepare(cfg, b.tokenizer, context_length(b.model)).test[:n]
        records = [task.sample_record(s) for s in test_a]
        if [task.sample_record(s) for s in test_b] != records:
            raise TailorError("A and B tokenize the test split differently (different samples fit model.max_length); "
                              "compare them on a prompt file with --file.")
        prompts_from = data or f"test split of {a_spec if source is a else b_spec}"
        ma, ra = task.evaluate(a.model, a.tokenizer, test_a, cfg, bf16, "A")
        mb, rb = task.evaluate(b.model, b.tokenizer, test_b, cfg, bf16, "B")
    paired = [{**rec, "a": x, "b": y} for rec, x, y in zip(records, ra, rb)]
    resamples = cfg.eval.bootstrap if bootstrap is None else bootstrap
    table = bootstrap_deltas(measure_records(paired, "a"), measure_records(paired, "b"), resamples,
                             cfg.eval.confidence, cfg.train.seed)
    for key in ("perplexity", "token_accuracy", "loss"):  # teacher-forced aggregates: no interval
        if isinstance(ma.get(key), (int, float)) and isinstance(mb.get(key), (int, float)):
            table[key] = {"a": ma[key], "b": mb[key], "delta": mb[key] - ma[key], "low": None, "high": None, "p_b_better": None}
    return {"a": a_spec, "b": b_spec, "prompts": prompts_from, "samples": len(paired), "decoding": cfg.decode.strategy,
            "decode": dataclasses.asdict(cfg.decode), "resamples": resamples, "confidence": cfg.eval.confidence,
            "metrics": table, "records": paired}


def main(args) -> int:
    from pathlib import Path

    from tailor.fsutil import write_json, write_text
    from tailor.report.console import comparison_table
    from tailor.report.html import comparison_page
    from tailor.report.run import input_of, reference_of

    result = compare(args.a, args.b, args.overrides, args.file, args.samples, args.bootstrap, args.data)
    print(f"\n{result['samples']} prompts from {result['prompts']}; decoding: {result['decoding']}")
    print(comparison_table(result["metrics"], "A", "B", result["confidence"]))
    print(f"A = {args.a}\nB = {args.b}\n")
    for i, r in enumerate(result["records"][: args.show]):
        print(f"--- prompt {i + 1} " + "-" * 40)
        print(textwrap.indent(input_of(r), "  "))
        if reference_of(r):
            print(textwrap.fill(f"[reference] {reference_of(r)}", 100, subsequent_indent="    "))
        print(textwrap.fill(f"[A] {r['a']['text']}", 100, subsequent_indent="    "))
        print(textwrap.fill(f"[B] {r['b']['text']}", 100, subsequent_indent="    "))
    if args.output:
        out = Path(args.output)
        write_json(out / "compare.json", result)
        write_text(out / "compare.html", comparison_page(result))
        print(f"\nwritten: {out / 'compare.json'}, {out / 'compare.html'}  (blind A/B sheet: tailor abtest export {out})")
    return 0
