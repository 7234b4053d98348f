"""report.html: self-contained, and rendered by headless Chromium with its plots and tables."""

import base64
import io
import json
import re
import shutil
import subprocess

import pytest

from conftest import ASSETS
from tailor.config import load_config
from tailor.report import compare_run, write_report
from tailor.workflow import run_job
from cli_process import tailor_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model):
    import yaml

    root = tmp_path_factory.mktemp("report")
    data = {
        "name": "tiny", "output_dir": str(root / "runs"),
        "model": {"name": str(tiny_model), "max_length": 128},
        "data": {"source": str(ASSETS / "dialogue.jsonl"), "val_fraction": 0.2, "test_fraction": 0.2,
                 "max_val_samples": 0, "max_test_samples": 0},
        "train": {"learning_rate": 3e-3, "batch_size": 4, "max_steps": 6, "eval_every": 3, "save_every": 0,
                  "log_every": 1, "precision": "fp32", "warmup_steps": 1},
        "eval": {"batch_size": 4, "generate_samples": 4, "show_samples": 1, "val_generate_samples": 3, "bootstrap": 200},
        "decode": {"max_new_tokens": 8, "batch_size": 4},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(data))
    run_job(load_config(root / "config.yaml"))
    return root / "runs" / "tiny"


def images(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_is_self_contained_with_plots_and_tables(run_dir):
    html = (run_dir / "report.html").read_text()
    # Nothing is fetched: no scripts, stylesheets, fonts or images from elsewhere.
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    pngs = images(html)
    assert len(pngs) == 3  # loss, validation metrics, lr / grad norm / throughput
    from PIL import Image

    for png in pngs:
        img = Image.open(io.BytesIO(png))
        assert img.format == "PNG" and img.width > 300 and img.height > 150
    for section in ("metrics", "curves", "samples", "data", "throughput", "environment", "config"):
        assert f'id="{section}"' in html
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    # Every number of the base vs fine-tuned table comes from metrics.json.
    assert f"{metrics['base']['perplexity']:.2f}" in html and f"{metrics['fine_tuned']['perplexity']:.2f}" in html
    assert "chrF" in html and "ROUGE-L F" in html and "95% bootstrap interval" in html
    assert "learning_rate: 0.003" in html  # the config
    assert "torch" in html and "transformers" in html
    assert "status <b class=\"status-complete\">complete</b>" in html  # written as the last step of the job


def test_comparison_agrees_with_the_test_metrics(run_dir):
    cmp = json.loads((run_dir / "comparison.json").read_text())
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert cmp["samples"] == 4 and cmp["resamples"] == 200
    for key in ("chrf", "bleu", "rougeL", "unigram_f1", "stop_rate", "response_tokens", "distinct_1"):
        assert cmp["metrics"][key]["a"] == pytest.approx(test["base"][key]), key
        assert cmp["metrics"][key]["b"] == pytest.approx(test["fine_tuned"][key]), key
        row = cmp["metrics"][key]
        assert row["low"] <= row["delta"] + 1e-9 and row["delta"] <= row["high"] + 1e-9
    again = compare_run(run_dir, resamples=200)
    assert again["metrics"] == cmp["metrics"]  # seeded


def test_report_rebuilds_from_the_folder_alone(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "model"))
    (copy / "report.html").unlink()
    result = tailor_cli("report", copy)
    assert result.returncode == 0, result.stderr
    assert len(images((copy / "report.html").read_text())) == 3


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (make test installs it)")
def test_chromium_renders_plots_and_tables(run_dir, tmp_path):
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    url = (run_dir / "report.html").resolve().as_uri()
    dom = subprocess.run(flags + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<img") == 3 and 'id="metrics-table"' in dom and 'id="samples-table"' in dom
    assert dom.count("<tr>") > 20
    shot = tmp_path / "report.png"
    subprocess.run(flags + [f"--screenshot={shot}", "--window-size=1200,1600", url], capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1200, 1600)
    colours = img.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # text, tables and a plot, not a blank page
