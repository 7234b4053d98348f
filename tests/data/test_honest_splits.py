"""Splits are drawn from a hash of each record's content, so a corpus that repeats the same conversation or
row under several ids (FAQ-style bot corpora) cannot leak it from train into validation or test;
data.dedupe drops the repeats; tailor data check counts them."""

import json

import yaml
from transformers import AutoTokenizer

from tailor.api import config
from tailor.data.content import conversation_key, record_key
from tailor.data.dialogue import split_of
from tailor.data.sources import read_conversations
from tailor.tasks import dialogue
from tailor.tasks.splits import load_records
from cli_process import tailor_cli

FAQ = [("How do I reset my password?", "Open Settings, then Account, then Reset password."),
       ("Where is my order?", "Your order page shows where each parcel is."),
       ("Can I pay by card?", "Yes, we take every major card."),
       ("How do I cancel?", "Write to us and we cancel within a day."),
       ("Do you ship abroad?", "We ship to forty countries.")]
COPIES = 8  # each FAQ conversation filed under 8 topics: under an id hash their copies would fall in several splits


def faq_corpus(path, unique: int = 30):
    """`unique` one-off conversations, then each FAQ conversation COPIES times under a new id and topic,
    some copies with extra whitespace (the same text once normalised)."""
    rows = [{"id": f"chat-{i}", "messages": [{"role": "user", "content": f"Tell me about topic number {i}."},
                                             {"role": "assistant", "content": f"Topic {i} is one of many."}]}
            for i in range(unique)]
    for copy in range(COPIES):
        for j, (question, answer) in enumerate(FAQ):
            spaced = question.replace(" ", "  ") + "\n" if copy % 3 == 1 else question
            rows.append({"id": f"topic-{copy}/faq-{j}", "messages": [{"role": "user", "content": spaced},
                                                                    {"role": "assistant", "content": answer}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, len(FAQ) * (COPIES - 1)


def data_check(cfg_path, *extra):
    return tailor_cli("data", "check", cfg_path, *extra)


def write_config(tmp_path, name="c", **cfg):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def contents(conversations) -> set[str]:
    return {conversation_key(c["messages"]) for c in conversations}


def test_id_hashing_would_have_leaked_the_fixture(tmp_path):
    """The fixture is one where splitting by id leaks: otherwise the tests below could not fail."""
    path, _ = faq_corpus(tmp_path / "faq.jsonl")
    by_id: dict[str, set[str]] = {}
    for c in read_conversations(str(path)):
        by_id.setdefault(conversation_key(c["messages"]), set()).add(split_of(str(c["id"]), 0.2, 0.2))
    assert sum(len(splits) > 1 for splits in by_id.values()) >= 3


def test_data_check_counts_repeats_and_the_splits_do_not_share_them(tmp_path, tiny_model):
    path, repeats = faq_corpus(tmp_path / "faq.jsonl")
    cfg = write_config(tmp_path, model={"name": str(tiny_model), "max_length": 128},
                       data={"source": str(path), "val_fraction": 0.2, "test_fraction": 0.2})
    result = data_check(cfg, "--json", tmp_path / "report.json")
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not an error
    out = result.stdout
    assert f"warning {path}: {repeats} conversation(s) repeat an earlier one exactly" in out
    assert "each repeat stays in its first copy's split" in out and "data.dedupe=true drops the repeats" in out
    assert "token lengths" in out  # the length statistics are still there
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["repeats"] == {"train": repeats} and not report["deduped"]
    assert sum(s["records"] for s in report["splits"].values()) == 30 + len(FAQ) * COPIES
    assert report["overlap"] == {"validation": [], "test": []}
    assert sum(len(g) - 1 for groups in report["duplicates"].values() for g in groups) == repeats

    # training's own split (tasks/dialogue.py reads and splits with data/sources.py and data/dialogue.py)
    splits = dialogue.prepare(config(str(cfg)), AutoTokenizer.from_pretrained(tiny_model), 256)
    train = contents(splits.train)
    assert train and splits.validation and splits.test
    assert not train & contents(splits.validation) and not train & contents(splits.test)
    assert not contents(splits.validation) & contents(splits.test)


def test_data_check_with_dedupe_drops_the_repeats(tmp_path, tiny_model):
    path, repeats = faq_corpus(tmp_path / "faq.jsonl")
    cfg = write_config(tmp_path, model={"name": str(tiny_model), "max_length": 128},
                       data={"source": str(path), "val_fraction": 0.2, "test_fraction": 0.2, "dedupe": True})
    result = data_check(cfg, "--json", tmp_path / "report.json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"data.dedupe: {repeats} exact duplicate(s) in {path} dropped" in result.stdout
    assert "repeat an earlier one exactly" not in result.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["deduped"] == {"train": repeats}
    assert sum(s["records"] for s in report["splits"].values()) == 30 + len(FAQ)
    assert all(not groups for groups in report["duplicates"].values())
    # training drops them too: one sample per conversation here, each content once
    splits = dialogue.prepare(config(str(cfg)), AutoTokenizer.from_pretrained(tiny_model), 256)
    samples = [conversation_key(s["messages"]) for part in (splits.train, splits.validation, splits.test) for s in part]
    assert len(samples) == len(set(samples)) == 30 + len(FAQ)


TABLES = {  # task: (file text, data settings, the fields that make an exact duplicate)
    "classification": ("sentence\tlabel\n" + "".join(f"film number {i} was fine\t{i % 2}\n" for i in range(30))
                       + "".join(f"the same {j}  review\t1\n" for _ in range(COPIES) for j in range(5)),
                       {"columns": {"text": "sentence"}, "label_names": ["negative", "positive"]}, ["text", "label"]),
    "text": ("".join(json.dumps({"prompt": f"Say {i}", "completion": f"number {i}"}) + "\n" for i in range(30))
             + "".join(json.dumps({"prompt": f"Say again {j}", "completion": "the same"}) + "\n"
                       for _ in range(COPIES) for j in range(5)), {}, ["prompt", "completion"]),
}


def table_config(tmp_path, task, dedupe):
    text, data, _ = TABLES[task]
    path = tmp_path / ("rows.tsv" if task == "classification" else "rows.jsonl")
    path.write_text(text)
    return config({"task": task, "data": {"source": str(path), "val_fraction": 0.2, "test_fraction": 0.2,
                                          "dedupe": dedupe, **data}})


def test_table_tasks_split_by_content_and_dedupe(tmp_path):
    from tailor.tasks.text import is_pairs

    for task, (_, _, fields) in TABLES.items():
        cfg = table_config(tmp_path, task, dedupe=False)
        assert task != "text" or is_pairs(cfg)
        records = load_records(cfg, fields, key_fields=fields[:1] if task == "classification" else fields)
        keys = {s: [record_key(r, fields) for r in rs] for s, rs in records.items()}
        assert sum(map(len, keys.values())) == 30 + 5 * COPIES
        assert not set(keys["train"]) & (set(keys["validation"]) | set(keys["test"])), task
        assert not set(keys["validation"]) & set(keys["test"]), task

        deduped = load_records(table_config(tmp_path, task, dedupe=True), fields,
                               key_fields=fields[:1] if task == "classification" else fields)
        keys = [record_key(r, fields) for rs in deduped.values() for r in rs]
        assert len(keys) == len(set(keys)) == 30 + 5, task


def test_translation_repeats_share_a_split_through_the_cli(tmp_path, tiny_model):
    """Translation through data check: a repeated pair lands in one split, and dedupe drops the repeats."""
    en = [f"A man number {i} walks." for i in range(30)] + [f"Two dogs  play {j}." for _ in range(COPIES) for j in range(5)]
    de = [f"Ein Mann Nummer {i} geht." for i in range(30)] + [f"Zwei Hunde spielen {j}." for _ in range(COPIES) for j in range(5)]
    (tmp_path / "t.en").write_text("\n".join(en) + "\n")
    (tmp_path / "t.de").write_text("\n".join(de) + "\n")
    for dedupe in (False, True):
        cfg = write_config(tmp_path, name=f"t{dedupe}", task="translation",
                           model={"name": str(tiny_model), "max_length": 64},
                           data={"source": {"en": str(tmp_path / "t.en"), "de": str(tmp_path / "t.de")},
                                 "columns": {"source": "en", "target": "de"}, "val_fraction": 0.2,
                                 "test_fraction": 0.2, "dedupe": dedupe})
        result = data_check(cfg, "--json", tmp_path / "r.json")
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["overlap"] == {"validation": [], "test": []}
        total = sum(s["records"] for s in report["splits"].values())
        assert (total, report["deduped"]) == ((35, {"train": 35}) if dedupe else (70, {}))
        assert ("35 record(s) repeat an earlier one exactly" in result.stdout) != dedupe
