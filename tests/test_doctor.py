"""tailor doctor: the run's tokenizer, tailor serve and exported GGUF/Modelfile agree, or each mismatch is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from transformers import AutoTokenizer

from tailor.cli import main
from tiny import CHATML, make_causal_lm


def make_run(root: Path, template: str | None = None) -> Path:
    """runs/<name>/ with model/ holding a tiny model, its tokenizer and tailor.yaml."""
    folder = make_causal_lm(root / "runs" / "tiny" / "model")
    if template is not None:
        tok = AutoTokenizer.from_pretrained(folder)
        tok.chat_template = template
        tok.save_pretrained(folder)
    cfg = {"name": "tiny", "data": {"system_prompt": "Be brief."}, "decode": {"max_new_tokens": 12}}
    (folder / "tailor.yaml").write_text(yaml.safe_dump(cfg))
    return folder.parent


def test_an_export_agrees_with_its_run(tmp_path, capsys):
    run = make_run(tmp_path)
    out = tmp_path / "export" / "tiny.gguf"
    assert main(["export", str(run), "--gguf", str(out), "--gguf-dtype", "f32"]) == 0
    capsys.readouterr()
    assert main(["doctor", str(run), "--gguf", str(out)]) == 0
    said = capsys.readouterr().out
    assert "all agree" in said and "MISMATCH" not in said
    assert f"GGUF {out}" in said and "Modelfile" in said  # both were looked at


def test_a_gguf_from_another_tokenizer_is_named_with_the_fix(tmp_path, capsys):
    run = make_run(tmp_path)
    # the same model exported after its chat template and eos changed: an export that no longer matches the run
    other = tmp_path / "other"
    shutil.copytree(run, other)
    tok = AutoTokenizer.from_pretrained(other / "model")
    tok.chat_template = CHATML.replace("<|im_end|>", "<|endoftext|>")
    tok.eos_token = "<|endoftext|>"
    tok.save_pretrained(other / "model")
    out = tmp_path / "export" / "tiny.gguf"
    assert main(["export", str(other), "--gguf", str(out), "--gguf-dtype", "f32"]) == 0
    capsys.readouterr()
    assert main(["doctor", str(run), "--gguf", str(out)]) == 1
    said = capsys.readouterr().out
    assert f"MISMATCH [GGUF {out}] its chat template differs" in said
    assert "its eos token is '<|endoftext|>'" in said and "the run's is '<|im_end|>'" in said
    assert f"MISMATCH [Modelfile {out.parent / 'Modelfile'}] its stop strings differ" in said
    assert f"fix: re-export it: tailor export {run / 'model'} --gguf {out} --overwrite" in said
    # and the other run agrees with its own export
    assert main(["doctor", str(other), "--gguf", str(out)]) == 0


def test_an_edited_modelfile_is_named(tmp_path, capsys):
    run = make_run(tmp_path)
    out = tmp_path / "tiny.gguf"
    assert main(["export", str(run), "--gguf", str(out), "--gguf-dtype", "f32"]) == 0
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(modelfile.read_text().replace('SYSTEM "Be brief."', 'SYSTEM "Be verbose."'))
    capsys.readouterr()
    assert main(["doctor", str(run), "--gguf", str(out)]) == 1
    said = capsys.readouterr().out
    assert "its SYSTEM prompt differs" in said and "Be verbose." in said
    assert "[GGUF" not in said  # the GGUF itself still agrees


def test_the_server_not_stopping_at_the_end_of_turn_is_named(tmp_path, capsys):
    # turns end with <|endoftext|>, which tailor serve does not stop on (its eos is <|im_end|>)
    run = make_run(tmp_path, template=CHATML.replace("<|im_end|>", "<|endoftext|>"))
    assert main(["doctor", str(run)]) == 1
    said = capsys.readouterr().out
    assert "MISMATCH [server] the chat template ends turns with '<|endoftext|>' but tailor serve does not stop on it" in said


def test_bad_input_exits_2(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["doctor", str(tmp_path / "nope")]) == 2
    assert main(["doctor", str(run), "--gguf", str(tmp_path / "missing.gguf")]) == 2
    assert "no such file" in capsys.readouterr().err
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    assert main(["doctor", str(run), "--gguf", str(junk)]) == 2
    assert "not a readable GGUF file" in capsys.readouterr().err
