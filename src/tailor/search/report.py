"""What a search leaves behind: best.yaml, trials.csv, summary.json, plots/*.png and report.html.

The HTML report is self-contained (plots are embedded as data URIs), so it can be mailed or
opened from any folder.
"""

from __future__ import annotations

import base64
import copy
import csv
import html
import io
import math
import warnings
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from tailor.config import Config, to_dict
from tailor.fsutil import write_bytes, write_json, write_text
from tailor.search.space import trial_config


def trial_rows(study: optuna.Study) -> list[dict]:
    """One row per trial: number, state, objective, validation loss at the best step, steps, time, values."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        retry_of = t.system_attrs.get("failed_trial")
        rows.append({
            "trial": t.number,
            "state": t.state.name.lower(),
            "value": t.value if t.state == TrialState.COMPLETE else None,
            "last_reported": t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None,
            "last_step": max(t.intermediate_values) if t.intermediate_values else None,
            "val_loss": t.user_attrs.get("val_loss"),
            "steps": t.user_attrs.get("steps"),
            "seconds": t.user_attrs.get("seconds"),
            "baseline": bool(t.user_attrs.get("baseline")),
            "retry_of": retry_of,
            **{f"param {k}": v for k, v in t.params.items()},
        })
    return rows


def best_config_yaml(base: Config, best: optuna.trial.FrozenTrial, folder: Path) -> str:
    cfg = trial_config(base, best.params, name=f"{base.name}-best")
    data = copy.deepcopy(to_dict(cfg))
    data.pop("search", None)
    header = (
        f"# Best configuration of the search in {folder} (trial {best.number}: "
        f"{base.eval.metric} {best.value:.6g}).\n"
        f"# Searched values: " + ", ".join(f"{k}={v}" for k, v in best.params.items()) + "\n"
        f"# Train it:  tailor train {folder / 'best.yaml'}\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def format_table(rows: list[dict], metric: str) -> str:
    if not rows:
        return "(no trials)"
    params = [k for k in rows[0] if k.startswith("param ")]
    for r in rows[1:]:
        params += [k for k in r if k.startswith("param ") and k not in params]
    head = ["trial", "state", metric, "val loss", "steps", "s"] + [p[6:] for p in params]
    lines = []
    for r in rows:
        value = r["value"] if r["value"] is not None else r["last_reported"]
        cells = [
            f"{r['trial']}{'*' if r['baseline'] else ''}",
            r["state"] + (f"@{r['last_step']}" if r["state"] == "pruned" and r["last_step"] is not None else "")
            + (f" (retry of {r['retry_of']})" if r["retry_of"] is not None else ""),
            _fmt(value), _fmt(r["val_loss"]), _fmt(r["steps"]), _fmt(r["seconds"]),
            *[_fmt(r.get(p)) for p in params],
        ]
        lines.append(cells)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)]
    out = ["  ".join(str(h).rjust(w) for h, w in zip(head, widths))]
    out.append("-" * len(out[0]))
    out += ["  ".join(str(c).rjust(w) for c, w in zip(cells, widths)) for cells in lines]
    return "\n".join(out)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def make_plots(study: optuna.Study, folder: Path) -> dict[str, Path]:
    """Optimization history, learning curves (intermediate values) and parameter importances, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots = {
        "optimization_history": (ovm.plot_optimization_history, len(complete) >= 1),
        "intermediate_values": (ovm.plot_intermediate_values, any(t.intermediate_values for t in study.trials)),
        "param_importances": (ovm.plot_param_importances, len(complete) >= 2 and _varied(complete)),
    }
    made = {}
    (folder / "plots").mkdir(exist_ok=True)
    for name, (plot, possible) in plots.items():
        if not possible:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as e:  # e.g. importances when no parameter varies
                print(f"search report: no {name} plot ({e})")
                continue
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(7.5, 4.5)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        path = folder / "plots" / f"{name}.png"
        write_bytes(path, buf.getvalue())  # workers of one study may draw the same plot at once
        made[name] = path
    return made


def _varied(trials) -> bool:
    keys = {k for t in trials for k in t.params}
    return any(len({repr(t.params.get(k)) for t in trials}) > 1 for k in keys)


def summarize(cfg: Config, study: optuna.Study, worker_seconds: float) -> dict:
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    baseline = next((t for t in trials if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE), None)
    summary = {
        "metric": cfg.eval.metric,
        "direction": "min" if cfg.eval.mode == "min" else "max",
        "trials": counts,
        "study_wall_seconds": round((max(ends) - min(starts)).total_seconds(), 1) if starts and ends else None,
        "trial_seconds": round(sum(t.user_attrs.get("seconds") or 0 for t in trials), 1),
        "this_worker_seconds": round(worker_seconds, 1),
        "baseline": None if baseline is None else {"trial": baseline.number, "value": baseline.value,
                                                   "val_loss": baseline.user_attrs.get("val_loss"),
                                                   "params": baseline.params},
        "best": None,
    }
    try:
        best = study.best_trial
    except ValueError:
        return summary
    summary["best"] = {"trial": best.number, "value": best.value, "val_loss": best.user_attrs.get("val_loss"),
                       "params": best.params, "run_dir": best.user_attrs.get("run_dir")}
    return summary


def write_outputs(cfg: Config, study: optuna.Study, folder: Path, worker_seconds: float = 0.0) -> dict:
    rows = trial_rows(study)
    summary = summarize(cfg, study, worker_seconds)
    table = format_table(rows, cfg.eval.metric)
    write_json(folder / "summary.json", summary)
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(folder / "trials.csv", buf.getvalue())
    best_yaml = None
    if summary["best"] is not None:
        best_yaml = best_config_yaml(cfg, study.best_trial, folder)
        write_text(folder / "best.yaml", best_yaml)
    plots = make_plots(study, folder)
    write_text(folder / "report.html", render_html(cfg, summary, table, best_yaml, plots, folder))

    counts = summary["trials"]
    print()
    print(table)
    print(f"\n{counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed, "
          f"{counts['running']} running; study wall time {summary['study_wall_seconds']} s")
    if summary["best"]:
        b = summary["best"]
        line = f"best: trial {b['trial']}, {cfg.eval.metric} {b['value']:.4f}"
        if summary["baseline"]:
            line += f" (baseline trial {summary['baseline']['trial']}: {summary['baseline']['value']:.4f})"
        print(line)
        print(f"best config: {folder / 'best.yaml'}  (tailor train {folder / 'best.yaml'})")
    print(f"report: {folder / 'report.html'}")
    return summary


CSS = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
pre{background:#f5f5f5;padding:.8rem;overflow-x:auto}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right}img{max-width:100%}"""


def render_html(cfg: Config, summary: dict, table: str, best_yaml: str | None, plots: dict[str, Path], folder: Path) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>search {e(cfg.name)}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>Hyperparameter search: {e(cfg.name)}</h1>",
             f"<p>Objective: best validation <b>{e(cfg.eval.metric)}</b> ({e(summary['direction'])}). "
             f"Sampler {e(cfg.search.sampler)}, pruner {e(cfg.search.pruner)}. Folder <code>{e(str(folder))}</code>.</p>"]
    counts = summary["trials"]
    parts.append("<table><tr>" + "".join(f"<th>{e(k)}</th>" for k in counts) + "<th>study wall time (s)</th></tr><tr>"
                 + "".join(f"<td>{v}</td>" for v in counts.values())
                 + f"<td>{summary['study_wall_seconds']}</td></tr></table>")
    if summary["best"]:
        b, base = summary["best"], summary["baseline"]
        rows = [("best", b)] + ([("baseline (config's own values)", base)] if base else [])
        parts.append("<h2>Best vs baseline</h2><table><tr><th>trial</th><th></th>"
                     f"<th>{e(cfg.eval.metric)}</th><th>validation loss</th><th>values</th></tr>")
        for label, r in rows:
            values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
            parts.append(f"<tr><td>{r['trial']}</td><td>{e(label)}</td><td>{_fmt(r['value'])}</td>"
                         f"<td>{_fmt(r['val_loss'])}</td><td style='text-align:left'>{e(values)}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Trials</h2><p>* marks the baseline trial; pruned@N: stopped at step N; a retry resumes the "
                 "run folder of a trial whose worker died.</p>"
                 f"<pre>{e(table)}</pre>")
    titles = {"optimization_history": "Optimization history", "intermediate_values": "Validation curves (what the pruner sees)",
              "param_importances": "Parameter importances"}
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<h2>{e(titles.get(name, name))}</h2><img alt='{e(name)}' src='data:image/png;base64,{data}'>")
    if best_yaml:
        parts.append(f"<h2>Best config</h2><pre>{e(best_yaml)}</pre>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
