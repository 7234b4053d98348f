"""Console tables for a run: base vs fine-tuned metrics and replies side by side."""

from __future__ import annotations

import textwrap

ROWS = [
    ("perplexity", "perplexity (response tokens)", "{:.2f}"),
    ("token_accuracy", "token accuracy", "{:.3f}"),
    ("loss", "loss", "{:.4f}"),
    ("response_tokens", "mean response length (tokens)", "{:.1f}"),
    ("stop_rate", "stop rate", "{:.2f}"),
]


def metrics_table(columns: dict[str, dict]) -> str:
    names = list(columns)
    width = max(len(label) for _, label, _ in ROWS)
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{n:>12}" for n in names)]
    lines.append("-" * len(lines[0]))
    for key, label, fmt in ROWS:
        cells = [fmt.format(columns[n][key]) if key in columns[n] else "-" for n in names]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
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
