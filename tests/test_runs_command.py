"""tailor runs: one line per run folder with its status and results, read from the folder alone."""

import json

from tailor.cli import main as cli
from tailor.config import load_config


def test_runs_lists_complete_failed_and_killed_runs(tiny_config, capsys):
    done = tiny_config(name="done", train={"max_steps": 2, "eval_every": 2})
    assert cli(["run", str(done)]) == 0
    runs = load_config(done).run_dir.parent
    killed = runs / "killed"
    killed.mkdir()
    (killed / "config.yaml").write_text("task: text\n")
    # A run whose process died without a word (SIGKILL): its status still says running, its pid is gone.
    (killed / "status.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 12345,
                                                    "host": __import__("socket").gethostname()}))
    capsys.readouterr()
    assert cli(["runs", str(runs), "--json"]) == 0
    rows = {r["name"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows["done"]["status"] == "complete" and rows["done"]["steps"] == 2 and rows["done"]["task"] == "dialogue"
    metrics = json.loads((runs / "done" / "metrics.json").read_text())["test"]
    assert rows["done"]["test_fine_tuned"] == metrics["fine_tuned"]["perplexity"]
    assert rows["done"]["size_mb"] > 0 and rows["done"]["seconds"] > 0
    assert rows["killed"]["status"] == "interrupted" and rows["killed"]["steps"] == 0
    assert cli(["runs", str(runs)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["name", "task", "status"] and len(table) == 3
    assert cli(["runs", str(runs / "nope")]) == 2
