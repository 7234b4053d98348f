"""Issue 19, data and config: bad input is a TailorError naming file, line and field (exit 2, no run folder),
good input from any editor loads, and `tailor data check` and `tailor train` agree about every file here."""

import contextlib
import io
import json
from pathlib import Path

import pytest
import yaml

from tailor.cli import main
from tailor.config import load_config
from tailor.data.sources import read_conversations
from tailor.data.tables import read_rows
from tailor.errors import TailorError
from tailor.generate.inputs import read_prompts
from tiny import ASSETS

HI = {"messages": [{"role": "user", "content": "hello how are you"}, {"role": "assistant", "content": "hello"}]}


def cli(*args) -> tuple[int, str]:
    """Run `tailor ARGS` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


def write_config(tmp_path: Path, tiny_model: Path, data: dict, **sections) -> Path:
    cfg = {"name": "bad", "output_dir": str(tmp_path / "runs"), "model": {"name": str(tiny_model), "max_length": 128},
           "data": {"val_fraction": 0.2, "test_fraction": 0.2, **data},
           "train": {"max_steps": 1, "batch_size": 2, "precision": "fp32", "log_every": 1, "eval_every": 0,
                     "save_every": 0},
           "eval": {"generate_samples": 0, "show_samples": 0}, **sections}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def assert_refused(cfg: Path, *needles: str) -> None:
    """Both data check and train refuse the config's data, train with exit 2 and before a run folder exists."""
    check, check_err = cli("data", "check", cfg)
    code, err = cli("train", cfg)
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert check in (1, 2), check_err  # 1: data check found errors; 2: it could not read the data at all
    assert not (cfg.parent / "runs" / "bad").exists()


def jsonl(path: Path, rows: list, newline: str = "\n", bom: bool = False, ascii_only: bool = True) -> Path:
    text = newline.join(json.dumps(r, ensure_ascii=ascii_only) for r in rows) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# ---------------------------------------------------------------- 1: undecodable and unreadable files


def test_invalid_utf8_dialogue_is_a_clean_error_in_train_and_data_check(tmp_path, tiny_model):
    data = tmp_path / "chats.jsonl"
    data.write_bytes(json.dumps(HI).encode() + b"\n" + b'{"messages": "\xff\xfe"}\n')
    assert_refused(write_config(tmp_path, tiny_model, {"source": str(data)}), "chats.jsonl, line 2", "UTF-8")


def test_invalid_utf8_config_and_prompt_file(tmp_path, tiny_model):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"name: x\ntrain:\n  seed: \xc3\x28\n")
    code, err = cli("train", cfg)
    assert code == 2 and "c.yaml, line 3: not valid UTF-8" in err, err
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(b"hello\n\x80bad\n")
    with pytest.raises(TailorError, match=r"p.txt, line 2: not valid UTF-8"):
        read_prompts(prompts)
    code, err = cli("generate", tiny_model, "--file", prompts)
    assert code == 2 and "p.txt, line 2" in err, err


def test_unreadable_files_name_the_file(tmp_path, tiny_model, monkeypatch):
    # Tests run as root here, where chmod 000 does not stop a read: make every read of these files fail instead.
    real = Path.read_bytes
    refused = {"chats.jsonl", "p.txt", "c.yaml"}

    def read_bytes(self):
        if self.name in refused:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    data = jsonl(tmp_path / "chats.jsonl", [HI])
    prompts = tmp_path / "p.txt"
    prompts.write_text("hi\n")
    cfg = write_config(tmp_path, tiny_model, {"source": str(data)})
    refused.discard("c.yaml")
    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert_refused(cfg, "chats.jsonl", "permission denied")
    with pytest.raises(TailorError, match="p.txt cannot be read: permission denied"):
        read_prompts(prompts)
    refused.add("c.yaml")
    code, err = cli("train", cfg)
    assert code == 2 and "config file" in err and "c.yaml cannot be read" in err, err
    with pytest.raises(TailorError, match="is a folder"):
        read_prompts(tmp_path)


# ---------------------------------------------------------------- 2: files from Windows editors


def test_jsonl_with_bom_and_crlf_loads(tmp_path):
    rows = [HI, {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]
    path = jsonl(tmp_path / "win.jsonl", rows, newline="\r\n", bom=True)
    conversations = read_conversations(str(path))
    assert [c["messages"] for c in conversations] == [r["messages"] for r in rows]
    assert [c["origin"] for c in conversations] == [f"{path}:1", f"{path}:2"]
    assert all(not m["content"].endswith("\r") for c in conversations for m in c["messages"])
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(b'\xef\xbb\xbf{"prompt": "hi"}\r\n')
    assert read_prompts(prompts)[0]["messages"][0]["content"] == "hi"
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"\xef\xbb\xbfmodel:\r\n  max_length: 64\r\n")
    assert load_config(cfg).model.max_length == 64


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_bom_in_table_header_is_not_part_of_the_column_name(tmp_path, suffix, sep):
    path = tmp_path / f"data{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + f"sentence{sep}label\r\ngood film{sep}1\r\n".encode())
    assert read_rows(str(path)) == [{"origin": f"{path}:2", "values": {"sentence": "good film", "label": "1"}}]


# ---------------------------------------------------------------- 3: data check and train agree


def test_empty_and_blank_files_are_refused_by_both(tmp_path, tiny_model):
    data = tmp_path / "chats.jsonl"
    data.write_text("")
    cfg = write_config(tmp_path, tiny_model, {"source": str(data)})
    assert_refused(cfg, "chats.jsonl", "no conversations")
    data.write_text("\n  \n\r\n\t\n")
    assert_refused(cfg, "chats.jsonl", "no conversations")


def test_only_conversation_too_long_names_the_sample_and_max_length(tmp_path, tiny_model):
    long = {"messages": [{"role": "user", "content": "hello " * 40}, {"role": "assistant", "content": "hi " * 40}]}
    data = jsonl(tmp_path / "chats.jsonl", [long])
    cfg = write_config(tmp_path, tiny_model, {"source": str(data)}, model={"name": str(tiny_model), "max_length": 16})
    assert_refused(cfg, f"{data}:1", "model.max_length=16")
    code, err = cli("train", cfg)
    assert "validation split is empty" not in err


def test_overlong_skip_says_why_a_split_is_empty(tmp_path, tiny_model):
    long = {"messages": [{"role": "user", "content": "hello " * 40}, {"role": "assistant", "content": "hi " * 40}]}
    data = jsonl(tmp_path / "chats.jsonl", [long])
    cfg = write_config(tmp_path, tiny_model, {"source": str(data), "overlong": "skip"},
                       model={"name": str(tiny_model), "max_length": 16})
    assert_refused(cfg, "split is empty", "longer than model.max_length=16 skipped")


def test_good_data_passes_both(tmp_path, tiny_model):
    cfg = write_config(tmp_path, tiny_model, {"source": str(ASSETS / "dialogue.jsonl")})
    assert cli("data", "check", cfg)[0] == 0
    code, err = cli("train", cfg)
    assert code == 0, err


# ---------------------------------------------------------------- 4: lines end at \n only


def test_unicode_line_separators_stay_inside_their_line(tmp_path):
    odd = "one\u2028two\u2029three\x85four\x0cfive\x1cend"
    rows = [HI, {"messages": [{"role": "user", "content": odd}, {"role": "assistant", "content": "ok"}]}, HI]
    path = jsonl(tmp_path / "chats.jsonl", rows, ascii_only=False)
    conversations = read_conversations(str(path))
    assert len(conversations) == 3 and conversations[1]["messages"][0]["content"] == odd
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": odd}, ensure_ascii=False) + '\n{"prompt": 1}\n', encoding="utf-8")
    with pytest.raises(TailorError, match=r"bad.jsonl, line 2: field 'prompt'"):
        read_prompts(bad)


def test_parallel_files_stay_aligned(tmp_path):
    en, de = tmp_path / "a.en", tmp_path / "a.de"
    en.write_text("one\u2028more\nsecond\x0cpage\nthird\n", encoding="utf-8")
    de.write_text("eins\ntwo\x85zwei\ndrei\n", encoding="utf-8")
    rows = read_rows({"en": str(en), "de": str(de)})
    assert [(r["values"]["en"], r["values"]["de"]) for r in rows] == [
        ("one\u2028more", "eins"), ("second\x0cpage", "two\x85zwei"), ("third", "drei")]


# ---------------------------------------------------------------- 5: shapes that crashed


def test_non_string_text_is_refused_by_both(tmp_path, tiny_model):
    data = jsonl(tmp_path / "docs.jsonl", [{"text": "hello how are you"}, {"text": 5}])
    cfg = write_config(tmp_path, tiny_model, {"source": str(data)}, task="text")
    assert_refused(cfg, f"{data}:2", "field 'text' must be text, got int")


def test_non_string_text_in_parquet(tmp_path, tiny_model):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), data)
    cfg = write_config(tmp_path, tiny_model, {"source": str(data)}, task="text")
    assert_refused(cfg, f"{data}:row 1", "must be text")


def test_dialogue_with_column_mapping_source(tmp_path, tiny_model):
    cfg = write_config(tmp_path, tiny_model, {"source": {"en": str(tmp_path / "a.en")}})
    assert_refused(cfg, "dialogue task reads 'chitchat' or a .jsonl file")


def test_config_mapping_source_with_a_number_for_a_file(tmp_path, tiny_model):
    cfg = write_config(tmp_path, tiny_model, {"source": {"en": 5}}, task="translation")
    code, err = cli("train", cfg)
    assert code == 2 and "data.source.en: expected str, got 5" in err, err


@pytest.mark.parametrize("rows, needle", [
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"}]}], "messages[1] is a second user turn in a row"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                    {"role": "system", "content": "s"}, {"role": "user", "content": "c"},
                    {"role": "assistant", "content": "d"}]}], "messages[2] is a system message after the start"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": " "}]}], "messages[1] (assistant) is empty"),
])
def test_training_refuses_what_data_check_flags(tmp_path, tiny_model, rows, needle):
    data = jsonl(tmp_path / "chats.jsonl", [HI, HI] + rows)
    assert_refused(write_config(tmp_path, tiny_model, {"source": str(data)}), "chats.jsonl, line 3", needle)


def test_lone_surrogates_and_deep_nesting_name_the_line(tmp_path, tiny_model):
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps(HI) + '\n{"messages": [{"role": "user", "content": "\\ud800"}]}\n')
    assert_refused(write_config(tmp_path, tiny_model, {"source": str(data)}),
                   "chats.jsonl, line 2", "messages[0].content", "lone surrogate")
    data.write_text(json.dumps(HI) + "\n" + "[" * 100000 + "\n")
    assert_refused(write_config(tmp_path, tiny_model, {"source": str(data)}), "chats.jsonl, line 2", "nested")
    data.write_text(json.dumps(HI) + "\n" + '{"messages": ' + "[" * 500 + "]" * 500 + "}\n")
    assert_refused(write_config(tmp_path, tiny_model, {"source": str(data)}), "chats.jsonl, line 2", "nested deeper")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a\\udfff"}\n')
    with pytest.raises(TailorError, match=r"p.jsonl, line 1: field prompt holds a lone surrogate"):
        read_prompts(prompts)


STRICT = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
          "{% endif %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")


def test_strict_chat_template_error_names_the_sample(tmp_path, tiny_model):
    template = tmp_path / "strict.jinja"
    template.write_text(STRICT)
    with_system = {"messages": [{"role": "system", "content": "be nice"}] + HI["messages"]}
    data = jsonl(tmp_path / "chats.jsonl", [HI] * 3 + [with_system] * 20)
    cfg = write_config(tmp_path, tiny_model, {"source": str(data), "chat_format": str(template)})
    assert_refused(cfg, "chats.jsonl:", "the chat template refuses this conversation", "System role not supported")


def test_empty_prompts_name_the_line_and_field(tmp_path):
    # Found by test_fuzz_readers: an empty turn was read as a prompt (a blank .txt line is skipped instead).
    cases = {'{"prompt": "  "}': "field 'prompt'", '{"messages": [{"role": "user", "content": ""}]}': "messages[0].content",
             '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}, '
             '{"role": "user", "content": "ok"}]}': "messages[1].content (assistant) is empty"}
    for line, field in cases.items():
        prompts = tmp_path / "p.jsonl"
        prompts.write_text('{"prompt": "fine"}\n' + line + "\n")
        with pytest.raises(TailorError, match=r"p.jsonl, line 2: ") as caught:
            read_prompts(prompts)
        assert field in str(caught.value)
    prompts.write_text('{"prompt": "fine"}\n\n{"messages": [{"role": "user", "content": "hi"}]}\n')
    assert [r["origin"].split(", ")[1] for r in read_prompts(prompts)] == ["line 1", "line 3"]


def test_a_bad_setting_names_its_line_even_in_a_windows_file(tmp_path):
    """A config error names the file, the line and the setting; a BOM and CRLF line ends (a Windows editor's) do not
    move the line. A value from the command line has no line in the file."""
    path = tmp_path / "run.yaml"
    path.write_bytes("\ufeffname: x\r\ntask: dialogue\r\ntrain:\r\n  batch_size: 8\r\n  optimizer: adamw_fp9\r\n".encode())
    with pytest.raises(TailorError, match=r"run\.yaml, line 5: train\.optimizer: 'adamw_fp9' is not one of"):
        load_config(path)
    path.write_text("train:\n  learning_rate: 1e-4\n\n  optimzer: adamw\n")
    with pytest.raises(TailorError, match=r"run\.yaml, line 4: train: unknown key 'optimzer'\. Did you mean 'optimizer'"):
        load_config(path)
    path.write_text("train:\n  batch_size: 8\n")
    with pytest.raises(TailorError) as refused:
        load_config(path, ["train.batch_size=many"])
    assert "line" not in str(refused.value) and "train.batch_size: expected int, got 'many'" in str(refused.value)
