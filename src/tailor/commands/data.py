"""tailor data check CONFIG: lint a config's data before training on it.

Checks the schema of every row (missing columns, malformed JSON/CSV rows, empty texts, unknown
labels, dialogue role alternation and empty turns), exact duplicates (a warning with their count: the
splits are drawn from a hash of the content, so each repeat stays in its first copy's split, and
data.dedupe=true drops them), duplicates within each split, overlap between train and validation/test, and, with the model's tokenizer, the token length distribution, how
much model.max_length would cut and the share of tokens trained on. Every bad row is named by file
and line. Exit code 1 when there is an error-level finding, else 0.
"""

from __future__ import annotations

import dataclasses
import json

from tailor.commands.common import add_config_arguments, config_from_args

NAME = "data"
HELP = "data tools: `tailor data check CONFIG` lints the config's data; `tailor data convert IN OUT` writes messages JSONL"


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="action")
    check = sub.add_parser("check", help="lint the data of a config", description=__doc__)
    add_config_arguments(check)
    check.add_argument("--show", type=int, default=10, help="findings listed per section (default 10)")
    check.add_argument("--json", dest="json_out", default=None, help="also write the full report to this JSON file")
    check.add_argument("--all", action="store_true", help="token statistics over all records (ignore data.max_*_samples)")
    convert = sub.add_parser("convert", help="write a dialogue file (OpenAI messages, ShareGPT, Alpaca) as OpenAI "
                             "messages JSONL", description="Reads IN in any dialogue format tailor reads (data.format), "
                             "checks every row as training would, and writes OUT: one {\"messages\": [...]} per line.")
    convert.add_argument("input", help="a .jsonl dialogue file")
    convert.add_argument("output", help="the .jsonl file to write")
    convert.add_argument("--format", default="auto", help="auto (each row by its fields), openai, sharegpt or alpaca")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def dialogue_records(cfg, findings: list) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """({split: conversations}, {split: repeats}), read, checked and split by the code training uses
    (data/sources.py, data/dialogue.py): a split with its own source (data.validation_source /
    data.test_source) is that file whole, and data.source's share of it trains."""
    from tailor.data.check import finding
    from tailor.data.content import conversation_key, first_occurrences
    from tailor.data.dialogue import split_conversations
    from tailor.data.sources import checked_conversations, conversation_rows
    from tailor.tasks.splits import source_of

    def read(source) -> list[dict]:
        problems: list[str] = []
        rows = conversation_rows(source, problems, cfg.data.format)
        findings.extend(finding("error", *p.split(": ", 1)) for p in problems)
        return [{"origin": c["origin"], "messages": c["messages"]} for c in checked_conversations(rows, findings)]

    d = cfg.data
    by_split, repeats = split_conversations(read(d.source), d.val_fraction, d.test_fraction, d.dedupe)
    found = {"train": repeats}
    for split in ("validation", "test"):
        if source_of(cfg, split) is not None:
            by_split["train"] += by_split[split]
            conversations = read(source_of(cfg, split))
            kept, found[split] = first_occurrences(conversations, lambda c: conversation_key(c["messages"]))
            by_split[split] = kept if d.dedupe else conversations
    return by_split, found


def task_fields(cfg) -> tuple[list[str], list[str], list[str]]:
    """(fields read, which make a duplicate; fields a split is drawn from, as the task's prepare passes them
    to tasks/splits.py; fields that make a train/test overlap)."""
    if cfg.task == "translation":
        return ["source", "target"], ["source"], ["source"]
    if cfg.task == "classification":
        return ["text", "label"], ["text"], ["text"]
    from tailor.tasks.text import is_pairs

    if is_pairs(cfg):
        return ["prompt", "completion"], ["prompt", "completion"], ["prompt"]
    return ["text"], ["text"], ["text"]


def table_records(cfg, findings: list) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """({split: records}, {split: repeats}), read, checked and split by the code training uses (tasks/splits.py)."""
    from tailor.tasks.splits import source_splits

    fields, split_fields, _ = task_fields(cfg)
    return source_splits(cfg, fields, key_fields=split_fields, findings=findings)


def repeat_findings(cfg, repeats: dict[str, list[dict]]) -> tuple[list[dict], dict[str, int]]:
    """(a warning per source with exact repeats, unless data.dedupe dropped them; {split: repeats dropped})."""
    from tailor.data.check import finding
    from tailor.tasks.splits import source_of

    what = "conversation(s)" if cfg.task == "dialogue" else "record(s)"
    out, dropped = [], {}
    for split, found in repeats.items():
        if not found:
            continue
        if cfg.data.dedupe:
            dropped[split] = len(found)
            continue
        where = str(source_of(cfg, split) or cfg.data.source)
        carved = " (the splits are drawn from a hash of the content)" if split == "train" else ""
        out.append(finding("warning", where, f"{len(found)} {what} repeat an earlier one exactly, e.g. "
                                             f"{found[0]['origin']}; each repeat stays in its first copy's "
                                             f"split{carved}; data.dedupe=true drops the repeats"))
    return out, dropped


def conflicting_labels(records: list[dict]) -> list[dict]:
    from tailor.data.check import finding

    labels: dict[str, dict] = {}
    out = []
    for r in records:
        first = labels.setdefault(r["text"], r)
        if str(first["label"]) != str(r["label"]):
            out.append(finding("warning", r["origin"], f"same text as {first['origin']} but label {r['label']!r} "
                                                      f"instead of {first['label']!r}"))
    return out


def task_tokenizer(cfg):
    """The tokenizer as the task's training loads it, and the model's context length."""
    from types import SimpleNamespace

    from transformers import AutoConfig

    from tailor.data import chat_format
    from tailor.models.load import context_length, load_tokenizer, resolve

    source = resolve(cfg.model.name, cfg.model.cache_dir)
    tokenizer = load_tokenizer(source)
    if cfg.task == "dialogue" or cfg.data.chat_template:
        chat_format.apply(tokenizer, cfg.data.chat_format)  # render as training will
    try:
        context = context_length(SimpleNamespace(config=AutoConfig.from_pretrained(source)))
    except (OSError, ValueError):  # no config.json to read it from: training finds out when it loads the model
        context = 1 << 30
    return tokenizer, context


def training_check(cfg, tokenizer, context: int) -> list[dict]:
    """What training's data preparation (the task's prepare, with the config as it is) refuses: empty
    splits, a sample longer than model.max_length with data.overlong=error, a chat template that
    refuses a conversation. The same call as training's, so data check and training agree."""
    from tailor.data.check import finding
    from tailor.errors import TailorError
    from tailor.tasks import get_task

    try:
        get_task(cfg.task).prepare(cfg, tokenizer, context)
    except TailorError as e:
        return [finding("error", "training", str(e))]
    return []


def token_report(cfg, all_records: bool, tokenizer=None) -> tuple[dict, str, str]:
    """({split: length summary}, what a length counts, a note) from the task's own tokenization."""
    from tailor.data.check import length_summary
    from tailor.data.tokenize import IGNORE
    from tailor.tasks import get_task

    max_length = cfg.model.max_length
    data = dataclasses.replace(cfg.data, overlong="skip")
    if all_records:
        data = dataclasses.replace(data, max_train_samples=0, max_val_samples=0, max_test_samples=0)
    note, unit = "", "tokens per sample"
    packed = cfg.task == "text" and cfg.data.pack
    if packed:
        data = dataclasses.replace(data, pack=False)
        note = ("data.pack is on: documents are joined and cut into max_length sequences, so nothing is dropped; "
                "the table shows document lengths.")
        unit = "tokens per document"
    stats_cfg = dataclasses.replace(cfg, data=data, model=dataclasses.replace(cfg.model, max_length=10**9))
    if tokenizer is None:
        tokenizer = task_tokenizer(cfg)[0]
    splits = get_task(cfg.task).prepare(stats_cfg, tokenizer, 10**9)
    out = {}
    for split in ("train", "validation", "test"):
        samples = splits[split]
        if cfg.task == "classification":
            out[split] = length_summary([len(s["input_ids"]) for s in samples], max_length)
            continue
        seq2seq = bool(samples) and samples[0].get("seq2seq", False)
        if seq2seq:
            unit = "tokens per sample: the longer of encoder input and decoder target"
            lengths = [max(len(s["input_ids"]), len(s["labels"])) for s in samples]
            supervised = sum(len(s["labels"]) for s in samples)
            summary = length_summary(lengths, max_length)
            total = sum(len(s["input_ids"]) + len(s["labels"]) for s in samples)
            summary.update(supervised_tokens=supervised, supervised_share=supervised / total if total else 0.0)
        else:
            summary = length_summary([len(s["input_ids"]) for s in samples], max_length,
                                     sum(sum(1 for x in s["labels"][1:] if x != IGNORE) for s in samples))
        out[split] = summary
    if cfg.task == "dialogue":
        note = "dialogue samples over max_length lose their oldest history turns first (data.overlong decides the rest)."
    return out, unit, note


def check(cfg, all_records: bool = False) -> dict:
    from tailor.data.check import duplicates, finding, overlap
    from tailor.data.content import conversation_key, record_key
    from tailor.errors import TailorError
    from tailor.tasks.splits import source_of

    findings: list[dict] = []
    if cfg.task == "dialogue":
        records, repeats = dialogue_records(cfg, findings)
        key_fields = overlap_fields = ["messages"]
    else:
        records, repeats = table_records(cfg, findings)
        key_fields, _, overlap_fields = task_fields(cfg)
        if cfg.task == "classification":
            findings += conflicting_labels([r for split in records.values() for r in split])

    def key_of(fields):  # the normalised content, as splitting and data.dedupe compare records
        if cfg.task == "dialogue":
            return lambda r: conversation_key(r["messages"])
        return lambda r: record_key(r, fields)

    warnings, dropped = repeat_findings(cfg, repeats)
    findings += warnings
    report = {
        "task": cfg.task,
        "max_length": cfg.model.max_length,
        "splits": {s: {"records": len(r), "source": str(source_of(cfg, s) or cfg.data.source)} for s, r in records.items()},
        "findings": findings,
        "repeats": {s: len(r) for s, r in repeats.items()},
        "deduped": dropped,
        "duplicates": {s: duplicates(r, key_of(key_fields)) for s, r in records.items()},
        "overlap_key": ", ".join(overlap_fields),
        "overlap": {s: overlap(records["train"], records[s], key_of(overlap_fields)) for s in ("validation", "test")},
    }
    tokenizer = None
    if not any(f["level"] == "error" for f in findings):
        try:
            tokenizer, context = task_tokenizer(cfg)
        except TailorError as e:  # training could not load it either
            findings.append(finding("error", "model", str(e)))
        else:
            findings += training_check(cfg, tokenizer, context)
    if tokenizer is None:  # the table still helps with a training-check error, e.g. to pick model.max_length
        report["tokens_skipped"] = "fix the errors above first"
    else:
        try:
            report["tokens"], report["length_unit"], report["tokens_note"] = token_report(cfg, all_records, tokenizer)
        except TailorError as e:
            report["tokens_skipped"] = str(e)
    return report


def convert(args) -> int:
    from pathlib import Path

    from tailor.data.sources import read_conversations
    from tailor.errors import TailorError
    from tailor.fsutil import write_text

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise TailorError(f"{out} already exists; pass --overwrite to replace it.")
    if out.resolve() == Path(args.input).resolve():
        raise TailorError(f"{out} is the input file; write the converted file elsewhere.")
    conversations = read_conversations(args.input, args.format)  # every row checked as training checks it
    write_text(out, "".join(json.dumps({"id": c["id"], "messages": c["messages"]}, ensure_ascii=False) + "\n"
                            for c in conversations))
    print(f"{len(conversations)} conversations written to {out}")
    return 0


def main(args) -> int:
    from tailor.data.check import format_report
    from tailor.fsutil import write_json

    if args.data_command == "convert":
        return convert(args)
    cfg = config_from_args(args)
    report = check(cfg, args.all)
    print(format_report(report, args.show))
    if args.json_out:
        write_json(args.json_out, report)
    return 1 if any(f["level"] == "error" for f in report["findings"]) else 0
