"""The Ollama Modelfile written beside a GGUF: a valid Modelfile whose TEMPLATE, rendered the way Ollama does,
gives the chat template's text, with the run's stop strings and decoding defaults."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tailor.cli import main
from tiny import make_causal_lm

INSTRUCTIONS = {"FROM", "TEMPLATE", "SYSTEM", "PARAMETER", "ADAPTER", "LICENSE", "MESSAGE"}
PARAMETERS = {"temperature", "top_k", "top_p", "repeat_penalty", "num_predict", "stop", "seed", "num_ctx"}
DEFAULT_SYSTEM = "You are a helpful assistant named Tiny."
# SmolLM2's kind of template: ChatML with a default system turn when the chat has none.
CHATML_WITH_DEFAULT = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n" + DEFAULT_SYSTEM + "<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
NOT_CHATML = ("{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
CHAT = [{"role": "user", "content": "hello how are you?"}, {"role": "assistant", "content": "Fine, and you?\nReally."},
        {"role": "user", "content": "Good. 12 cats!"}]


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(instruction, argument) pairs; fails on any line that is not a known instruction or a comment."""
    out, lines = [], iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        word, _, arg = line.partition(" ")
        assert word.upper() in INSTRUCTIONS, f"unknown Modelfile instruction: {line!r}"
        if word.upper() == "PARAMETER":
            name, _, arg = arg.partition(" ")
            assert name in PARAMETERS, f"unknown parameter {name!r}"
            word = f"PARAMETER {name}"
        if arg.startswith('"""'):  # a value in triple quotes may span lines
            arg = arg[3:]
            while '"""' not in arg:
                arg += "\n" + next(lines)
            assert arg.endswith('"""') and arg.count('"""') == 1, arg
            arg = arg[:-3]
        elif arg.startswith('"'):
            assert arg.endswith('"') and len(arg) > 1, arg
            arg = arg[1:-1]
        out.append((word.upper() if " " not in word else word, arg))
    return out


def render_go(template: str, messages: list[dict]) -> str:
    """The Go text/template subset the Modelfile uses: {{- range .Messages }} ... {{ end }} with .Role and .Content."""
    tokens = re.split(r"({{-?\s*[^}]*?\s*-?}})", template)
    out, i = [], 0

    def text_of(parts: list[str], message: dict | None) -> str:
        s = ""
        for j, part in enumerate(parts):
            if not part.startswith("{{"):
                s += part
                continue
            action = part.strip("{}-").strip()
            if part.startswith("{{-"):
                s = s.rstrip()
            if action == ".Role":
                s += message["role"]
            elif action == ".Content":
                s += message["content"]
            else:
                raise AssertionError(f"template action outside the subset: {part}")
        return s

    while i < len(tokens):
        part = tokens[i]
        if part.startswith("{{") and part.strip("{}-").strip() == "range .Messages":
            if part.startswith("{{-"):
                out = ["".join(out).rstrip()]
            end = next(k for k in range(i + 1, len(tokens)) if tokens[k].strip("{}-").strip() == "end")
            out += [text_of(tokens[i + 1:end], m) for m in messages]
            i = end + 1
            continue
        assert not part.startswith("{{"), f"template action outside the subset: {part}"
        out.append(part)
        i += 1
    return "".join(out)


def ollama_render(pairs: list[tuple[str, str]], messages: list[dict]) -> str:
    """What Ollama feeds the model: SYSTEM becomes a first system message when the chat has none."""
    values = dict(pairs)
    if "SYSTEM" in values and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": values["SYSTEM"]}, *messages]
    return render_go(values["TEMPLATE"], messages)


def model_run(root: Path, template: str | None = None, decode: dict | None = None, system: str | None = None) -> Path:
    """A model folder with a tailor.yaml, as a run's model/ holds."""
    from transformers import AutoTokenizer

    folder = make_causal_lm(root / "model")
    if template is not None:
        tok = AutoTokenizer.from_pretrained(folder)
        tok.chat_template = template
        tok.save_pretrained(folder)
    cfg = {"name": "tiny", "model": {"name": "tiny"}}
    if decode is not None:
        cfg["decode"] = decode
    if system is not None:
        cfg["data"] = {"system_prompt": system}
    (folder / "tailor.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def test_modelfile_is_valid_and_renders_like_the_chat_template(tmp_path, capsys):
    from transformers import AutoTokenizer

    decode = {"do_sample": True, "temperature": 0.5, "top_k": 20, "top_p": 0.8, "repetition_penalty": 1.2,
              "max_new_tokens": 40, "stop_strings": ["END", 'say "bye"'], "seed": 3}
    folder = model_run(tmp_path, decode=decode, system="You are terse.")
    out = tmp_path / "out" / "tiny.gguf"
    assert main(["export", str(folder), "--gguf", str(out), "--gguf-dtype", "f32"]) == 0
    assert "Modelfile" in capsys.readouterr().out
    pairs = parse_modelfile((out.parent / "Modelfile").read_text())
    values = dict(pairs)
    assert values["FROM"] == "./tiny.gguf" and (out.parent / values["FROM"]).is_file()
    assert [v for k, v in pairs if k == "PARAMETER stop"] == ["<|im_end|>", "END", 'say "bye"']
    assert (values["PARAMETER temperature"], values["PARAMETER top_k"], values["PARAMETER top_p"]) == ("0.5", "20", "0.8")
    assert (values["PARAMETER repeat_penalty"], values["PARAMETER num_predict"], values["PARAMETER seed"]) == ("1.2", "40", "3")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # tailor serve puts the run's system prompt first when the chat has none; Ollama does the same with SYSTEM
    assert values["SYSTEM"] == "You are terse."
    expected = tokenizer.apply_chat_template([{"role": "system", "content": "You are terse."}, *CHAT], tokenize=False,
                                             add_generation_prompt=True)
    assert ollama_render(pairs, CHAT) == expected
    own = [{"role": "system", "content": "Other."}, *CHAT]
    assert ollama_render(pairs, own) == tokenizer.apply_chat_template(own, tokenize=False, add_generation_prompt=True)


def test_modelfile_keeps_the_templates_default_system_turn_and_greedy_decoding(tmp_path):
    from transformers import AutoTokenizer

    folder = model_run(tmp_path, template=CHATML_WITH_DEFAULT, decode={"max_new_tokens": 9})
    out = tmp_path / "tiny.gguf"
    assert main(["export", str(folder), "--gguf", str(out), "--gguf-dtype", "q8_0"]) == 0
    pairs = parse_modelfile((tmp_path / "Modelfile").read_text())
    values = dict(pairs)
    assert values["SYSTEM"] == DEFAULT_SYSTEM
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert ollama_render(pairs, CHAT) == tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert values["PARAMETER temperature"] == "0" and "PARAMETER top_k" not in values  # greedy, as tailor decodes
    assert values["PARAMETER repeat_penalty"] == "1.0"  # written: Ollama's own default is 1.1


def test_a_template_that_is_not_chatml_gets_no_template_and_a_note(tmp_path, capsys):
    folder = model_run(tmp_path, template=NOT_CHATML)
    out = tmp_path / "tiny.gguf"
    assert main(["export", str(folder), "--gguf", str(out), "--gguf-dtype", "f32"]) == 0
    assert "note: the chat template is not ChatML" in capsys.readouterr().out
    text = (tmp_path / "Modelfile").read_text()
    pairs = parse_modelfile(text)
    assert "TEMPLATE" not in dict(pairs) and "# the chat template is not ChatML" in text
    assert ("PARAMETER stop", "<|im_end|>") in pairs


def test_a_modelfile_tailor_did_not_write_is_kept(tmp_path, capsys):
    folder = model_run(tmp_path)
    out = tmp_path / "out" / "tiny.gguf"
    out.parent.mkdir()
    mine = out.parent / "Modelfile"
    mine.write_text("FROM llama3\nSYSTEM mine\n")
    assert main(["export", str(folder), "--gguf", str(out)]) == 2
    assert "Modelfile exists and was not written by tailor" in capsys.readouterr().err
    assert mine.read_text() == "FROM llama3\nSYSTEM mine\n" and not out.exists()  # nothing written at all
    assert main(["export", str(folder), "--gguf", str(out), "--overwrite"]) == 0
    assert dict(parse_modelfile(mine.read_text()))["FROM"] == "./tiny.gguf"
    # its own Modelfile is tailor's to replace (the GGUF beside it still needs --overwrite)
    shutil.copyfile(mine, tmp_path / "before")
    assert main(["export", str(folder), "--gguf", str(out), "--overwrite"]) == 0
    assert mine.read_text() == (tmp_path / "before").read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["Modelfile", "tiny.gguf"]


def test_render_go_is_a_real_check():
    """The test renderer tells templates apart (so the equality checks above can fail)."""
    msgs = [{"role": "user", "content": "x"}]
    assert render_go("{{- range .Messages }}[{{ .Role }}]{{ .Content }}\n{{ end }}A:", msgs) == "[user]x\nA:"
    with pytest.raises(AssertionError):
        render_go("{{ if .System }}{{ .System }}{{ end }}", msgs)
