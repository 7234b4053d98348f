"""Data linting: pure checks over records, each problem named by its row's origin (file and line).

A finding is a plain dict {"level": "error" | "warning", "where": "data.jsonl:12", "message": ...}.
`tailor data check CONFIG` (commands/data.py) reads the config's sources, runs these checks and the
task's tokenization, and prints one report.

    >>> [f["message"] for f in check_conversation({"origin": "f:3", "values": {"messages": [
    ...     {"role": "user", "content": "hi"}, {"role": "user", "content": " "},
    ...     {"role": "assistant", "content": "hello"}]}})]
    ['messages[1] is a second user turn in a row (roles should alternate user/assistant)', 'messages[1] (user) is empty']
"""

from __future__ import annotations

import re
from collections import defaultdict

from tailor.errors import TailorError

ROLES = ("system", "user", "assistant")


def finding(level: str, where: str, message: str) -> dict:
    return {"level": level, "where": where, "message": message}


def location(origin: str) -> str:
    """An origin as an error message names it: "data.jsonl:12" -> "data.jsonl, line 12".

    >>> location("data/chats.jsonl:12"), location("dataset.json:a07e")
    ('data/chats.jsonl, line 12', 'dataset.json:a07e')
    """
    match = re.fullmatch(r"(.*):(\d+)", origin, re.DOTALL)
    return f"{match[1]}, line {match[2]}" if match else origin


def check_messages(messages: object, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise TailorError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} objects.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TailorError(f"{where}: messages[{i}] must be an object with 'role' and 'content'.")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise TailorError(f"{where}: messages[{i}].role is {role!r}; expected one of {', '.join(ROLES)}.")
        if not isinstance(content, str):
            raise TailorError(f"{where}: messages[{i}].content must be a string, got {type(content).__name__}.")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def check_conversation(row: dict) -> list[dict]:
    """Schema, role order and empty turns of one {"messages": [...]} row."""
    where = row["origin"]
    if "messages" not in row["values"]:
        return [finding("error", where, "missing field 'messages' (expected {\"messages\": [{\"role\", \"content\"}, ...]}, "
                                        "ShareGPT's {\"conversations\": [...]} or Alpaca's {\"instruction\", \"output\"})")]
    try:
        messages = check_messages(row["values"]["messages"], where)
    except TailorError as e:
        return [finding("error", where, str(e).removeprefix(f"{where}: "))]
    out = []
    previous = None
    for i, m in enumerate(messages):
        if m["role"] == "system":
            if i != 0:
                out.append(finding("error", where, f"messages[{i}] is a system message after the start"))
            continue
        if previous is None and m["role"] != "user":
            out.append(finding("warning", where, f"messages[{i}]: the conversation opens with {m['role']}, not user"))
        if m["role"] == previous:
            out.append(finding("error", where, f"messages[{i}] is a second {m['role']} turn in a row "
                                               "(roles should alternate user/assistant)"))
        previous = m["role"]
    for i, m in enumerate(messages):
        if not m["content"].strip():
            out.append(finding("error", where, f"messages[{i}] ({m['role']}) is empty"))
    if not any(m["role"] == "assistant" for m in messages):
        out.append(finding("warning", where, "no assistant turn: the conversation yields no training sample"))
    return out


def check_texts(record: dict, fields: list[str]) -> list[dict]:
    """Each field must be a non-empty string."""
    out = []
    for f in fields:
        value = record.get(f)
        if not isinstance(value, str):
            out.append(finding("error", record["origin"], f"field '{f}' must be text, got {type(value).__name__} {value!r}"))
        elif not value.strip():
            out.append(finding("error", record["origin"], f"field '{f}' is empty"))
    return out


def duplicates(records: list[dict], key) -> list[list[str]]:
    """Groups of origins whose records share a key (each group: first occurrence, then the repeats)."""
    seen: dict = defaultdict(list)
    for r in records:
        seen[key(r)].append(r["origin"])
    return [origins for origins in seen.values() if len(origins) > 1]


def overlap(train: list[dict], other: list[dict], key) -> list[tuple[str, str]]:
    """(origin in `other`, origin of the same key in train) for every record of `other` seen in train."""
    first = {}
    for r in train:
        first.setdefault(key(r), r["origin"])
    return [(r["origin"], first[key(r)]) for r in other if key(r) in first]


def percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def length_summary(lengths: list[int], max_length: int, supervised: int | None = None) -> dict:
    """Token length distribution, what model.max_length would cut, and the share of tokens trained on."""
    values = sorted(lengths)
    total = sum(values)
    cut = sum(max(0, n - max_length) for n in values)
    out = {
        "samples": len(values), "tokens": total,
        "min": values[0] if values else 0, "p50": percentile(values, 0.5), "p90": percentile(values, 0.9),
        "p99": percentile(values, 0.99), "max": values[-1] if values else 0,
        "over_max_length": sum(1 for n in values if n > max_length), "tokens_cut": cut,
        "tokens_cut_share": cut / total if total else 0.0,
    }
    if supervised is not None:
        out["supervised_tokens"] = supervised
        out["supervised_share"] = supervised / total if total else 0.0
    return out


def format_report(report: dict, show: int = 10) -> str:
    """The console form of a check report (see commands/data.py for its fields)."""
    lines = [f"data check: task {report['task']}, model.max_length {report['max_length']}"]
    for split, info in report["splits"].items():
        lines.append(f"  {split:<10} {info['records']:>7} records  from {info['source']}")
    for split, dropped in report.get("deduped", {}).items():
        source = report["splits"][split]["source"]
        lines.append(f"  data.dedupe: {dropped} exact duplicate(s) in {source} dropped before splitting (the first of each kept)")
    findings = report["findings"]
    errors = [f for f in findings if f["level"] == "error"]
    warnings = [f for f in findings if f["level"] == "warning"]
    lines.append(f"\nschema and content: {len(errors)} error(s), {len(warnings)} warning(s)")
    for f in (errors + warnings)[:show]:
        lines.append(f"  {f['level']:<7} {f['where']}: {f['message']}")
    if len(findings) > show:
        lines.append(f"  ... {len(findings) - show} more (--show N to list more, --json FILE for all)")
    for split, groups in report["duplicates"].items():
        repeats = sum(len(g) - 1 for g in groups)
        lines.append(f"\nduplicates in {split}: {repeats} repeated record(s) in {len(groups)} group(s)")
        for g in groups[:show]:
            lines.append(f"  {g[0]} repeated at {', '.join(g[1:4])}{' ...' if len(g) > 4 else ''}")
    for split, pairs in report["overlap"].items():
        lines.append(f"\noverlap train/{split} ({report['overlap_key']}): {len(pairs)} {split} record(s) also in train")
        for where, first in pairs[:show]:
            lines.append(f"  {where} = {first}")
    if report.get("tokens"):
        lines.append(f"\ntoken lengths ({report['length_unit']}), with model.max_length {report['max_length']}:")
        lines.append(f"  {'split':<10} {'samples':>8} {'min':>5} {'p50':>5} {'p90':>5} {'p99':>5} {'max':>6} "
                     f"{'over':>6} {'cut':>7} {'trained on':>11}")
        for split, s in report["tokens"].items():
            trained = f"{100 * s['supervised_share']:.1f}%" if "supervised_share" in s else "-"
            lines.append(f"  {split:<10} {s['samples']:>8} {s['min']:>5} {s['p50']:>5} {s['p90']:>5} {s['p99']:>5} "
                         f"{s['max']:>6} {s['over_max_length']:>6} {100 * s['tokens_cut_share']:>6.1f}% {trained:>11}")
        lines.append("  over: samples longer than max_length; cut: share of tokens truncation would drop; "
                     "trained on: share of tokens with a loss")
        if report.get("tokens_note"):
            lines.append(f"  {report['tokens_note']}")
    elif report.get("tokens_skipped"):
        lines.append(f"\ntoken lengths: skipped ({report['tokens_skipped']})")
    return "\n".join(lines)
