"""tailor generate, tailor compare and tailor abtest end to end on the tiny model."""

import csv
import io
import json
import re

import pytest

from cli_process import tailor_cli
from tailor.commands.abtest import sign_test, tally, win_rate

VARIED = "decode.no_repeat_ngram_size=1"  # a random tiny model otherwise repeats one token


def tailor(*args):
    return tailor_cli(*args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    import yaml

    from conftest import ASSETS

    root = tmp_path_factory.mktemp("cmp")
    data = {"name": "tiny", "output_dir": str(root / "runs"), "model": {"name": str(tiny_model), "max_length": 128},
            "data": {"source": str(ASSETS / "dialogue.jsonl"), "val_fraction": 0.2, "test_fraction": 0.2,
                     "max_val_samples": 0, "max_test_samples": 0},
            "train": {"learning_rate": 3e-3, "batch_size": 4, "max_steps": 4, "eval_every": 0, "save_every": 0,
                      "precision": "fp32", "warmup_steps": 1},
            "eval": {"batch_size": 4, "generate_samples": 5, "bootstrap": 100},
            "decode": {"max_new_tokens": 6, "batch_size": 4}}
    (root / "config.yaml").write_text(yaml.safe_dump(data))
    result = tailor("train", root / "config.yaml")
    assert result.returncode == 0, result.stderr
    return root / "runs" / "tiny"


def test_generate_batched_from_prompts_and_file(trained, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello how are you\n\nwhat do you like\n")
    out = tmp_path / "out.jsonl"
    r = tailor("generate", trained, "--prompt", "hi there", "--file", prompts, VARIED, "decode.max_new_tokens=5",
               "decode.batch_size=2", "--output", out)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [row["messages"][-1]["content"] for row in rows] == ["hi there", "hello how are you", "what do you like"]
    assert all(0 < row["tokens"] <= 5 and row["reply"] for row in rows)
    assert r.stdout.count("--- ") == 3
    beams = tailor("generate", trained, "--prompt", "hi there", VARIED, "decode.num_beams=3", "decode.max_new_tokens=5")
    assert beams.returncode == 0 and "decoding: beam" in beams.stderr


def test_generate_errors_name_the_problem(trained, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"promt": "typo"}\n')
    r = tailor("generate", trained, "--file", bad)
    assert r.returncode == 2 and "bad.jsonl, line 2" in r.stderr and "prompt" in r.stderr
    r = tailor("generate", trained, "--prompt", "x", "train.seed=1")
    assert r.returncode == 2 and "decode.key=value" in r.stderr
    r = tailor("generate", trained, "--prompt", "x", "decode.top_p=2")
    assert r.returncode == 2 and "top_p" in r.stderr


def test_compare_base_model_with_run_on_its_test_split(trained, tiny_model, tmp_path):
    out = tmp_path / "cmp"
    r = tailor("compare", tiny_model, trained, VARIED, "--output", out, "--samples", "4")
    assert r.returncode == 0, r.stderr
    result = json.loads((out / "compare.json").read_text())
    assert result["samples"] == 4 and result["resamples"] == 100 and result["prompts"].startswith("test split")
    for key in ("chrf", "bleu", "rougeL", "unigram_f1", "distinct_2", "stop_rate"):
        row = result["metrics"][key]
        assert row["low"] is not None and row["low"] <= row["delta"] + 1e-9 <= row["high"] + 2e-9
    ppl = result["metrics"]["perplexity"]
    assert ppl["a"] > 1 and ppl["b"] > 1 and ppl["low"] is None
    assert ppl["b"] < ppl["a"]  # trained on the same kind of dialogues
    assert all(rec["a"]["text"] and rec["b"]["text"] for rec in result["records"])
    html = (out / "compare.html").read_text()
    assert 'id="metrics-table"' in html and html.count("<tr>") >= 10
    assert "chrF" in r.stdout and "[A]" in r.stdout and "[B]" in r.stdout


def test_compare_on_a_prompt_file_with_references(trained, tiny_model, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hello how are you", "reference": "fine, thanks"}\n'
                       '{"messages": [{"role": "user", "content": "what do you like"}, {"role": "assistant", "content": "board games"}]}\n')
    r = tailor("compare", tiny_model, trained, "--file", prompts, VARIED, "--bootstrap", "50", "--output", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "o" / "compare.json").read_text())
    assert result["samples"] == 2 and "perplexity" in result["metrics"] and "chrf" in result["metrics"]
    assert [rec["reference"] for rec in result["records"]] == ["fine, thanks", "board games"]


def test_compare_needs_prompts_when_no_run_is_given(tiny_model):
    r = tailor("compare", tiny_model, tiny_model)
    assert r.returncode == 2 and "--file" in r.stderr


def test_abtest_round_trip(trained, tiny_model, tmp_path):
    out = tmp_path / "cmp"
    assert tailor("compare", tiny_model, trained, VARIED, "--output", out, "--samples", "5").returncode == 0
    sheet = tmp_path / "sheet"
    r = tailor("abtest", "export", out, "--out", sheet, "--seed", "1")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO((sheet / "sheet.csv").read_text())))
    key = json.loads((sheet / "key.json").read_text())
    assert len(rows) == 5 and {row["id"] for row in rows} == set(key["order"])
    html = (sheet / "sheet.html").read_text()
    assert html.count('type="radio"') == 15 and not re.search(r'(src|href)="(?!data:|#)', html)
    result = json.loads((out / "compare.json").read_text())
    texts_b = [rec["b"]["text"] for rec in result["records"]]
    # Both orders occur, and the sheet never names the systems.
    assert {v["1"] for v in key["order"].values()} == {"a", "b"}
    assert str(trained) not in (sheet / "sheet.csv").read_text()

    # A judge who always prefers B's output (found by its text), except one tie.
    judged = tmp_path / "judgements.csv"
    lines = ["id,judgement"]
    for i, row in enumerate(rows):
        pick = "tie" if i == 0 else ("1" if key["order"][row["id"]]["1"] == "b" else "2")
        lines.append(f"{row['id']},{pick}")
        assert row["response_1"] in texts_b or row["response_2"] in texts_b
    judged.write_text("\n".join(lines) + "\n")
    r = tailor("abtest", "import", sheet / "key.json", judged, "--output", tmp_path / "result.json")
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "result.json").read_text())
    assert (res["wins_b"], res["wins_a"], res["ties"], res["judged"]) == (4, 0, 1, 5)
    assert res["win_rate_b"] == pytest.approx(4.5 / 5)
    assert res["sign_test_p"] == pytest.approx(2 / 16)

    judged.write_text("id,judgement\np0001,maybe\n")
    r = tailor("abtest", "import", sheet / "key.json", judged)
    assert r.returncode == 2 and "line 2" in r.stderr


def test_sign_test_and_win_rate_reference_values():
    assert sign_test(8, 2) == pytest.approx(0.109375)  # scipy.stats.binomtest(8, 10).pvalue
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    w = win_rate([1, 1, 0, 0.5], resamples=500)
    assert w["rate"] == pytest.approx(0.625) and 0 <= w["low"] <= 0.625 <= w["high"] <= 1
    key = {"a": "x", "b": "y", "order": {"p1": {"1": "a", "2": "b"}, "p2": {"1": "b", "2": "a"}}}
    t = tally(key, {"p1": "2", "p2": "2"}, resamples=0)
    assert (t["wins_a"], t["wins_b"], t["win_rate_b"]) == (1, 1, 0.5)
