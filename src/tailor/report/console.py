"""Console tables for a run: base vs fine-tuned metrics and replies side by side."""

from __future__ import annotations

import textwrap

from tailor.eval.compare import format_interval

# (key, label, format): every metric tailor's dialogue evaluation reports, in display order.
ROWS = [
    ("perplexity", "perplexity (response tokens)", "{:.2f}"),
    ("token_accuracy", "token accuracy", "{:.3f}"),
    ("loss", "loss", "{:.4f}"),
    ("chrf", "chrF", "{:.2f}"),
    ("bleu", "BLEU", "{:.2f}"),
    ("rouge1", "ROUGE-1 F", "{:.3f}"),
    ("rouge2", "ROUGE-2 F", "{:.3f}"),
    ("rougeL", "ROUGE-L F", "{:.3f}"),
    ("unigram_f1", "unigram F1", "{:.3f}"),
    ("distinct_1", "distinct-1", "{:.3f}"),
    ("distinct_2", "distinct-2", "{:.3f}"),
    ("response_tokens", "mean response length (tokens)", "{:.1f}"),
    ("stop_rate", "stop rate", "{:.2f}"),
    ("repetition_rate", "repetition rate (seq-rep-4)", "{:.3f}"),
    ("accuracy", "accuracy", "{:.3f}"),
    ("macro_f1", "macro F1", "{:.3f}"),
]
LABELS = {key: label for key, label, _ in ROWS}


def fmt(key: str, value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    spec = next((f for k, _, f in ROWS if k == key), "{:.4g}")
    return spec.format(value)


def metrics_table(columns: dict[str, dict]) -> str:
    """One row per known metric present in any column, one column per system."""
    names = list(columns)
    rows = [r for r in ROWS if any(isinstance(columns[n].get(r[0]), (int, float)) for n in names)]
    width = max([len(label) for _, label, _ in rows] + [6])
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{n:>12}" for n in names)]
    lines.append("-" * len(lines[0]))
    for key, label, _ in rows:
        cells = [fmt(key, columns[n].get(key)) for n in names]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def comparison_table(table: dict[str, dict], a: str = "A", b: str = "B", confidence: float | None = None) -> str:
    """Rows of `tailor.eval.compare.bootstrap_deltas`: A, B, B - A with its bootstrap interval."""
    order = [k for k, _, _ in ROWS if k in table] + [k for k in table if k not in LABELS]
    width = max([len(LABELS.get(k, k)) for k in order] + [6])
    head = f"{b} - {a}" + (f" [{confidence:.0%} CI]" if confidence else "")
    lines = [f"{'metric':<{width}}  {a:>12}  {b:>12}  {head}"]
    lines.append("-" * max(len(lines[0]), width + 50))
    for k in order:
        row = table[k]
        lines.append(f"{LABELS.get(k, k):<{width}}  {fmt(k, row['a']):>12}  {fmt(k, row['b']):>12}  {format_interval(row)}")
    return "\n".join(lines)


def side_by_side(samples: list[dict], replies: dict[str, list[dict]], count: int, width: int = 100) -> str:
    out = []
    for i, sample in enumerate(samples[:count]):
        out.append(f"--- test prompt {i + 1} " + "-" * 40)
        for m in sample["messages"][:-1]:
            if m["role"] != "system":
                out.append(textwrap.fill(f"{m['role']}: {m['content']}", width, subsequent_indent="    "))
        out.append(textwrap.fill(f"[reference] {sample['messages'][-1]['content']}", width, subsequent_indent="    "))
        for name, rs in replies.items():
            out.append(textwrap.fill(f"[{name}] {rs[i]['text']}", width, subsequent_indent="    "))
    return "\n".join(out)
