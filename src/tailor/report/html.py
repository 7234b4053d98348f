"""report.html: one self-contained page per run, readable offline.

Everything is inline: CSS in a <style> block, plots as base64 PNG <img> tags, no scripts, no
fonts or files from elsewhere. Built only from what the run folder holds (config.yaml,
status.json, data_stats.json, log.jsonl, metrics.json or train_summary.json, comparison.json,
samples.json), so `tailor report RUN_DIR` can rebuild it any time.

f-strings and html.escape, not Jinja2: each row's cells, classes and intervals are shaped in Python either way,
so a template would add a file without making this shorter.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from html import escape
from pathlib import Path

from tailor.config.evaluation import HIGHER_IS_BETTER
from tailor.eval.compare import format_interval, length_caveats
from tailor.fsutil import write_text
from tailor.runs import run_status
from tailor.report import plots
from tailor.report.console import LABELS, ROWS, fmt

MAX_SAMPLES = 50

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img.plot { max-width: 100%; display: block; margin: 0.6em 0; }
.muted { color: #777; } .better { color: #1a7f37; } .worse { color: #b42318; }
table.samples td { max-width: 330px; white-space: pre-wrap; word-wrap: break-word; }
.status-complete { color: #1a7f37; } .status-failed { color: #b42318; } .status-interrupted { color: #b42318; }
"""


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def environment() -> dict:
    """Versions and hardware of the machine writing the report."""
    import torch
    import transformers

    import tailor
    from tailor.device import cpu_has_bf16

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "logical cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "native bf16": cpu_has_bf16(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tailor": getattr(tailor, "__version__", "") or "dev",
    }
    try:
        import psutil

        env["memory"] = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except ImportError:
        pass
    return env


def _kv_table(rows: dict, cls: str = "") -> str:
    body = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(_plain(v))}</td></tr>" for k, v in rows.items())
    return f'<table class="{cls}">{body}</table>'


def _plain(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def _img(b64: str | None, alt: str) -> str:
    if not b64:
        return f'<p class="muted">No data for the {escape(alt)} plot.</p>'
    return f'<img class="plot" alt="{escape(alt)}" src="data:image/png;base64,{b64}">'


def metrics_section(test: dict | None, comparison: dict | None) -> str:
    if not test:
        return '<p class="muted">No test evaluation (tailor train runs only train; tailor run evaluates).</p>'
    names = list(test)
    cmp_rows = (comparison or {}).get("metrics", {})
    keys = [k for k, _, _ in ROWS if any(isinstance(test[n].get(k), (int, float)) for n in names)]
    head = "".join(f"<th>{escape(n.replace('_', '-'))}</th>" for n in names)
    conf = (comparison or {}).get("confidence")
    head += f"<th>change ({conf:.0%} bootstrap interval)</th>" if conf else "<th>change</th>"
    body = []
    for k in keys:
        cells = "".join(f'<td class="num">{escape(fmt(k, test[n].get(k)))}</td>' for n in names)
        row = cmp_rows.get(k)
        if row is None and len(names) == 2 and all(isinstance(test[n].get(k), (int, float)) for n in names):
            row = {"delta": test[names[1]][k] - test[names[0]][k], "low": None, "high": None}
        change, cls = "-", ""
        if row is not None:
            change = format_interval(row)
            up = HIGHER_IS_BETTER.get(k)
            if up is not None and row.get("low") is not None:
                if (row["low"] > 0 and up) or (row["high"] < 0 and not up):
                    cls = "better"
                elif (row["high"] < 0 and up) or (row["low"] > 0 and not up):
                    cls = "worse"
        body.append(f'<tr><th>{escape(LABELS.get(k, k))}</th>{cells}<td class="num {cls}">{escape(change)}</td></tr>')
    note = ""
    if comparison:
        note = (f'<p class="muted">Intervals: paired bootstrap over the {comparison["samples"]} generated prompts, '
                f'{comparison["resamples"]} resamples; green/red where the interval excludes zero. '
                "Perplexity, token accuracy and loss are teacher-forced aggregates, shown without an interval.</p>")
        note += "".join(f'<p class="caveat">{escape(c)}</p>' for c in length_caveats(cmp_rows))
    return f'<table id="metrics-table"><tr><th>metric</th>{head}</tr>{"".join(body)}</table>{note}'


def samples_section(records: list[dict] | None, sides: dict[str, str] | None = None) -> str:
    """Input, reference and each side's output per record; `sides` maps record keys to column titles."""
    from tailor.report.run import input_of, reference_of

    if not records:
        return '<p class="muted">No generated samples.</p>'
    sides = sides or {"base": "base", "fine_tuned": "fine-tuned"}
    head = "".join(f"<th>{escape(title)}</th>" for title in sides.values())
    label = any(isinstance(r.get("label"), str) for r in records)
    rows = []
    for i, r in enumerate(records[:MAX_SAMPLES]):
        ref = r["label"] if label else (reference_of(r) or "")
        outs = "".join(f"<td>{escape(str((r.get(s) or {}).get('text', '')))}</td>" for s in sides)
        rows.append(f'<tr><td class="num">{i + 1}</td><td>{escape(input_of(r))}</td><td>{escape(ref)}</td>{outs}</tr>')
    more = f'<p class="muted">First {MAX_SAMPLES} of {len(records)}.</p>' if len(records) > MAX_SAMPLES else ""
    return (f'<table class="samples" id="samples-table"><tr><th>#</th><th>input</th><th>reference</th>{head}</tr>'
            f'{"".join(rows)}</table>{more}')


def data_section(stats: dict | None) -> str:
    if not stats:
        return '<p class="muted">No data statistics.</p>'
    flat = {}
    for k, v in stats.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                flat[f"{k}: {kk}"] = vv
        else:
            flat[k] = v
    return _kv_table(flat, "data")


def build_report(run_dir: str | Path, finishing: bool = False) -> str:
    """The page; `finishing`: written as the job's last step, just before status.json says complete."""
    run_dir = Path(run_dir)
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else ""
    status = run_status(run_dir)  # a killed run reads 'interrupted', not 'running' forever
    if finishing and status.get("status") == "running":
        status = {**status, "status": "complete", "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    stats = _read_json(run_dir / "data_stats.json")
    log = _read_log(run_dir / "log.jsonl")
    metrics = _read_json(run_dir / "metrics.json") or {}
    train = metrics.get("train") or (_read_json(run_dir / "train_summary.json") or {}).get("train") or {}
    comparison = _read_json(run_dir / "comparison.json")
    samples = _read_json(run_dir / "samples.json")
    best = _read_json(run_dir / "model" / "metrics.json")
    test = metrics.get("test")

    throughput = {}
    if train:
        throughput = {
            "device": " ".join(str(train[k]) for k in ("device", "precision") if train.get(k)) or None,
            "peak memory (MB; the GPU's allocations, else the process's peak RSS)": train.get("peak_memory_mb"),
            "optimizer steps": train.get("steps"),
            "training tokens / s (real tokens, compute only)": train.get("tokens_per_second"),
            "wall time (s)": train.get("seconds"),
            "best step": train.get("best_step"),
            "best validation loss": train.get("best_val_loss"),
            "stopped early": train.get("stopped_early"),
        }
    if best:
        throughput["kept model"] = f"step {best.get('step')} (model/)"
    state = escape(str(status.get("status", "unknown")))
    title = escape(run_dir.resolve().name)
    return page(f"tailor run {title}", [
        f"<h1>tailor run <code>{title}</code></h1>",
        f'<p>status <b class="status-{state}">{state}</b>; started {escape(str(status.get("started", "?")))}, '
        f'finished {escape(str(status.get("finished", "?")))}; report written '
        f'{dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}.</p>',
        '<h2 id="metrics">Test metrics: base vs fine-tuned</h2>',
        metrics_section(test, comparison),
        '<h2 id="curves">Loss and metric curves</h2>',
        _img(plots.loss_curves(log, (best or {}).get("step")), "loss curves"),
        _img(plots.metric_curves(log), "validation metric curves"),
        _img(plots.training_curves(log), "learning rate, gradient norm and throughput"),
        '<h2 id="samples">Sample outputs side by side</h2>',
        samples_section(samples),
        '<h2 id="data">Data statistics</h2>',
        data_section(stats),
        '<h2 id="throughput">Throughput</h2>',
        _kv_table(throughput, "throughput") if throughput else '<p class="muted">No training summary.</p>',
        '<h2 id="environment">Environment</h2>',
        _kv_table(environment(), "environment"),
        '<h2 id="config">Config</h2>',
        f"<pre>{escape(config)}</pre>",
    ])


def page(title: str, body: list[str]) -> str:
    """A complete HTML page with the inline stylesheet."""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{title}</title><style>{CSS}</style></head><body>",
        *body,
        "</body></html>",
    ])


def comparison_page(result: dict) -> str:
    """compare.html of `tailor compare`: metrics table with bootstrap intervals, outputs side by side."""
    a, b = result["a"], result["b"]
    test = {a: {k: r["a"] for k, r in result["metrics"].items()}, b: {k: r["b"] for k, r in result["metrics"].items()}}
    return page(f"tailor compare {escape(a)} vs {escape(b)}", [
        f"<h1>{escape(a)} vs {escape(b)}</h1>",
        f'<p>{result["samples"]} prompts ({escape(result["prompts"])}), decoding: {escape(result["decoding"])}.</p>',
        '<h2 id="metrics">Metrics</h2>',
        metrics_section(test, result),
        '<h2 id="samples">Outputs side by side</h2>',
        samples_section(result["records"], {"a": a, "b": b}),
    ])


def write_report(run_dir: str | Path, finishing: bool = False) -> Path:
    """Write <run_dir>/report.html (atomically) and return its path."""
    path = Path(run_dir) / "report.html"
    write_text(path, build_report(run_dir, finishing))
    return path
