"""Console tables shared by the task modules: base vs fine-tuned metrics, one row per metric, and the
labels and formats of every metric tailor reports (the run report and comparisons use them too)."""

from __future__ import annotations

import textwrap
from typing import Callable

# (key, label, format): every metric tailor's evaluations report, in display order.
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


def metrics_table(columns: dict[str, dict], rows: list[tuple[str, str, str]]) -> str:
    """rows: (metric key, label, format); a metric a column lacks shows as '-'."""
    names = list(columns)
    width = max(len(label) for _, label, _ in rows)
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{n:>12}" for n in names)]
    lines.append("-" * len(lines[0]))
    for key, label, fmt in rows:
        cells = [fmt.format(columns[n][key]) if isinstance(columns[n].get(key), (int, float)) else "-" for n in names]
        lines.append(f"{label:<{width}}  " + "  ".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def side_by_side(samples: list[dict], outputs: dict[str, list[dict]], count: int, title: str,
                 lines: Callable[[dict], list[str]], width: int = 100) -> str:
    """The first `count` test samples: a '--- test <title> N' rule, the sample's own `lines` (its input and
    reference), then each model's output where it has one, each wrapped at `width`."""
    out = []
    for i, sample in enumerate(samples[:count]):
        out.append(f"--- test {title} {i + 1} " + "-" * 40)
        texts = lines(sample) + [f"[{name}] {rs[i]['text']}" for name, rs in outputs.items() if i < len(rs)]
        out += [textwrap.fill(t, width, subsequent_indent="    ") for t in texts]
    return "\n".join(out)


def table(rows: list[tuple[str, str, str]]) -> Callable[[dict[str, dict]], str]:
    """A task's `metrics_table`: its metrics in these rows."""
    return lambda columns: metrics_table(columns, rows)


def lister(title: str, lines: Callable[[dict], list[str]]) -> Callable[..., str]:
    """A task's `side_by_side`: each sample's `lines`, then every model's output."""
    return lambda samples, outputs, count, width=100: side_by_side(samples, outputs, count, title, lines, width)


def record(*fields: str) -> Callable[[dict], dict]:
    """A task's `sample_record`: these fields of a test sample, kept beside the outputs in the run's records."""
    return lambda sample: {f: sample[f] for f in fields}

