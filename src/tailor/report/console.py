"""Console tables for a comparison: A, B and B - A with its bootstrap interval, per metric."""

from __future__ import annotations

from tailor.eval.compare import format_interval
from tailor.tasks.console import LABELS, ROWS, fmt  # noqa: F401  (also the run report's labels)

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
