"""The Python API (tailor.api): the README's example runs as written, on a tiny model."""

import re
from pathlib import Path

import pytest

from tailor import api
from tailor.errors import TailorError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tiny_config, capsys):
    path = tiny_config()
    scope = {"CONFIG": str(path)}
    exec(readme_example(), scope)
    run, metrics, replies = scope["run"], scope["metrics"], scope["replies"]
    assert run == path.parent / "runs" / "from-python" and (run / "model" / "config.json").is_file()
    assert (run / "status.json").read_text().count('"complete"') == 1
    assert metrics["perplexity"] > 1 and "tokens" in metrics
    assert len(replies) == 1 and 1 <= replies[0]["tokens"] <= 8
    assert type(scope["model"]).__name__ == "LlamaForCausalLM"
    assert capsys.readouterr().out.strip().endswith("LlamaForCausalLM")


def test_configs_from_mappings_and_bad_input_raise_tailor_errors(tiny_config, tmp_path):
    cfg = api.config(api.read_config(tiny_config()), **{"train.learning_rate": 1e-4, "name": "m"})
    assert cfg.train.learning_rate == 1e-4 and cfg.name == "m"
    with pytest.raises(TailorError, match="learning_rate"):
        api.config(tiny_config(), **{"train.learning_rate": -1})
    with pytest.raises(TailorError):
        api.evaluate(tmp_path / "no-such-run")
