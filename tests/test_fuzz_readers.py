"""Every reader, fed arbitrary bytes and arbitrary JSON shapes: the file loads, or a TailorError names it;
never another exception. Training's reading and `tailor data check`'s agree on every example, and through
the CLI a refusal is exit 2 with no run folder."""

import contextlib
import io
import itertools
import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tailor.cli import main
from tailor.config import config_from_dict, load_config
from tailor.data.sources import checked_conversations, conversation_rows, read_conversations
from tailor.errors import TailorError
from tailor.generate.inputs import read_prompts
from tailor.tasks.splits import read_records

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
names = itertools.count()  # a new file name per example: classification caches labels by source path

# Text with the characters that have broken readers: line separators, BOMs, CR, NUL, lone surrogates.
TRICKY = st.sampled_from(["\u2028", "\u2029", "\x85", "\x0c", "\r", "\ufeff", "\x00", "\ud800", "\udfff", "\n", "é"])
TEXT = st.lists(st.one_of(st.text(max_size=8), TRICKY), max_size=4).map("".join)
KEYS = st.sampled_from(["messages", "role", "content", "text", "label", "prompt", "completion", "reference", "id",
                        "sentence", "en", "de", "model", "name", "train", "data", "source", "task"])
ROLE = st.sampled_from(["user", "assistant", "system", "bot"])
MESSAGE = st.fixed_dictionaries({"role": ROLE, "content": st.one_of(TEXT, st.integers())})
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT, ROLE, MESSAGE),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.one_of(KEYS, TEXT), inner, max_size=4)),
    max_leaves=12,
)
ROW = st.one_of(JSON, st.dictionaries(KEYS, JSON, max_size=4),
                st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=4)}))


@st.composite
def jsonl_bytes(draw) -> bytes:
    """JSON lines as an editor might save them: either escape style, LF or CRLF, maybe a BOM."""
    rows = draw(st.lists(ROW, max_size=5))
    ascii_only = draw(st.booleans())
    lines = [json.dumps(r, ensure_ascii=ascii_only) for r in rows]
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines)
    data = text.encode("utf-8", "surrogatepass")
    return (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + data


CONTENT = st.one_of(st.binary(max_size=200), jsonl_bytes())


def fresh(folder: str, suffix: str, data: bytes) -> Path:
    path = Path(folder) / f"f{next(names)}{suffix}"
    path.write_bytes(data)
    return path


def loads_or_names(read, path: Path):
    """read() loads, or raises a TailorError naming the file (with a line number when it says one)."""
    try:
        return read()
    except TailorError as e:
        message = str(e)
        assert path.name in message, message
        if ", line " in message:
            line = int(message.split(", line ", 1)[1].split(":", 1)[0])
            assert 1 <= line <= path.read_bytes().count(b"\n") + 1, message
        return e


def agree(train_read, check_read, path: Path, empty_is_error: bool = False) -> None:
    """Training's reader refuses the file exactly when data check finds an error in it (or, where
    training needs at least one record, finds none: data check's run of the task's prepare says so)."""
    trained = loads_or_names(train_read, path)
    findings: list = []
    try:
        records = check_read(findings)
    except TailorError as e:  # the file cannot be read at all: training cannot read it either
        assert isinstance(trained, TailorError) and path.name in str(e)
        return
    errors = [f for f in findings if f["level"] == "error"]
    refused = bool(errors) or (empty_is_error and not records)
    assert isinstance(trained, TailorError) == refused, (trained, errors)


@FAST
@given(CONTENT)
def test_dialogue_reader(data):
    with tempfile.TemporaryDirectory() as folder:
        path = fresh(folder, ".jsonl", data)
        def check(found):
            problems: list = []
            conversations = checked_conversations(conversation_rows(str(path), problems), found)
            found += [{"level": "error", "where": p, "message": p} for p in problems]
            return conversations

        agree(lambda: read_conversations(str(path)), check, path, empty_is_error=True)


TASKS = {"text": (".jsonl", ["text"]), "classification": (".tsv", ["text", "label"]),
         "translation": (".jsonl", ["source", "target"])}


@FAST
@given(st.sampled_from(sorted(TASKS)), st.sampled_from([".jsonl", ".csv", ".tsv", ".txt"]), CONTENT)
def test_table_readers(task, suffix, data):
    with tempfile.TemporaryDirectory() as folder:
        path = fresh(folder, suffix, data)
        fields = TASKS[task][1]
        cfg = config_from_dict({"task": task, "data": {"source": str(path), "columns": {"text": "sentence"}
                                                       if task == "classification" else {}}})

        def check(found):
            problems: list = []
            records = read_records(cfg, str(path), "train", fields, findings=problems)
            found += problems
            return records

        agree(lambda: read_records(cfg, str(path), "train", fields), check, path)


@FAST
@given(st.binary(max_size=120), st.binary(max_size=120))
def test_line_aligned_translation_files(en_bytes, de_bytes):
    with tempfile.TemporaryDirectory() as folder:
        en, de = fresh(folder, ".en", en_bytes), fresh(folder, ".de", de_bytes)
        cfg = config_from_dict({"task": "translation", "data": {"source": {"en": str(en), "de": str(de)},
                                                                 "columns": {"source": "en", "target": "de"}}})
        try:
            records = read_records(cfg, cfg.data.source, "train", ["source", "target"])
        except TailorError as e:
            assert en.name in str(e) or de.name in str(e), str(e)
        else:  # the files were read line for line: as many records as non-empty lines in both
            assert all(isinstance(r["source"], str) and "\n" not in r["source"] for r in records)


@FAST
@given(st.sampled_from([".jsonl", ".txt"]), CONTENT)
def test_prompt_files(suffix, data):
    with tempfile.TemporaryDirectory() as folder:
        path = fresh(folder, suffix, data)
        records = loads_or_names(lambda: read_prompts(path), path)
        if not isinstance(records, TailorError):
            assert all(isinstance(m["content"], str) and m["content"].encode() for r in records for m in r["messages"])


CONFIG_JSON = st.dictionaries(st.sampled_from(["name", "task", "model", "data", "train", "eval", "decode", "search"]),
                              st.one_of(JSON, st.dictionaries(st.sampled_from(
                                  ["learning_rate", "max_length", "source", "betas", "epochs", "log_every", "name",
                                   "max_grad_norm", "seed", "temperature", "lora", "columns"]), JSON, max_size=3)),
                              max_size=4)


@st.composite
def config_bytes(draw) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "yaml"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    value = draw(CONFIG_JSON)
    text = json.dumps(value) if kind == "json" else yaml.safe_dump(value, allow_unicode=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config_bytes())
def test_config_files(data):
    with tempfile.TemporaryDirectory() as folder:
        path = fresh(folder, ".yaml", data)
        loads_or_names(lambda: load_config(path), path)


def cli(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(task=st.sampled_from(["dialogue", "text"]), data=CONTENT)
def test_cli_train_and_data_check_agree(tiny_model, task, data):
    """Through the CLI: exit 0, or exit 2 with one paragraph naming the file and no run folder; data check
    says the same (0 where train runs, an error where it does not)."""
    with tempfile.TemporaryDirectory() as folder:
        path = fresh(folder, ".jsonl", data)
        cfg = Path(folder) / "c.yaml"
        cfg.write_text(yaml.safe_dump({
            "name": "fuzz", "task": task, "output_dir": str(Path(folder) / "runs"),
            "model": {"name": str(tiny_model), "max_length": 64},
            "data": {"source": str(path), "val_fraction": 0.2, "test_fraction": 0.2, "overlong": "skip"},
            "train": {"max_steps": 1, "batch_size": 2, "precision": "fp32", "eval_every": 0, "save_every": 0},
            "eval": {"generate_samples": 0, "show_samples": 0},
        }))
        check, _ = cli("data", "check", cfg)
        code, err = cli("train", cfg)
        assert code in (0, 2), err
        assert (check == 0) == (code == 0), (check, code, err)
        if code == 2:
            assert err.startswith("error: ") and "Traceback" not in err and path.name in err, err
            assert not (Path(folder) / "runs" / "fuzz").exists()
