"""Plots of a run's log.jsonl as inline PNG (base64), drawn with matplotlib's Agg backend.

Figures are built with `matplotlib.figure.Figure` directly (no pyplot global state), so drawing
a report never opens a window or touches another figure.
"""

from __future__ import annotations

import base64
import io
import math

SKIP = {"step", "split", "epoch", "tokens"}  # bookkeeping, not metrics


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _series(log: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    rows = [r for r in log if r.get("split") == split and isinstance(r.get(key), (int, float))
            and not isinstance(r.get(key), bool) and math.isfinite(r[key])]
    return [r["step"] for r in rows], [float(r[key]) for r in rows]


def loss_curves(log: list[dict], best_step: int | None = None) -> str | None:
    """Training and validation loss against optimizer steps; a dashed line at the kept model's step."""
    train = _series(log, "train", "loss")
    val = _series(log, "validation", "loss")
    if not train[0] and not val[0]:
        return None
    fig = _figure(7, 3.6)
    ax = fig.add_subplot()
    if train[0]:
        ax.plot(*train, label="train loss", color="#4c72b0", linewidth=1.2)
    if val[0]:
        ax.plot(*val, label="validation loss", color="#dd8452", marker="o", linewidth=1.6)
    if best_step:
        ax.axvline(best_step, color="#777", linestyle="--", linewidth=1, label=f"kept model (step {best_step})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / response token)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Loss")
    return _png(fig)


def training_curves(log: list[dict]) -> str | None:
    """Learning rate, gradient norm and throughput against steps."""
    panels = [(k, _series(log, "train", k)) for k in ("lr", "grad_norm", "tokens_per_second", "peak_memory_mb")]
    panels = [(k, s) for k, s in panels if s[0]]
    if not panels:
        return None
    fig = _figure(3.3 * len(panels), 2.8)
    titles = {"lr": "learning rate", "grad_norm": "gradient norm", "tokens_per_second": "tokens / s",
              "peak_memory_mb": "peak memory (MB)"}
    for i, (key, (steps, values)) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.plot(steps, values, color="#55a868", linewidth=1.2)
        ax.set_title(titles[key])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def metric_curves(log: list[dict]) -> str | None:
    """Every validation metric other than the loss, one small panel each."""
    keys = []
    for r in log:
        if r.get("split") == "validation":
            keys += [k for k, v in r.items() if k not in SKIP and k != "loss" and k not in keys
                     and isinstance(v, (int, float)) and not isinstance(v, bool)]
    series = [(k, _series(log, "validation", k)) for k in keys]
    series = [(k, s) for k, s in series if s[0]]
    if not series:
        return None
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig = _figure(3.3 * cols, 2.6 * rows)
    for i, (key, (steps, values)) in enumerate(series):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.plot(steps, values, marker="o", color="#c44e52", linewidth=1.4)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)
