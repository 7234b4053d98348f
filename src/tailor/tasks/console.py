"""Console tables shared by the task modules: base vs fine-tuned metrics, one row per metric."""

from __future__ import annotations


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
