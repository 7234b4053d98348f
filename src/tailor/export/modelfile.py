"""An Ollama Modelfile beside an exported GGUF: `ollama create NAME -f Modelfile` then runs it as tailor does.

Ollama renders chats with its own Go templates, not the Jinja chat template inside the GGUF, so the
Modelfile carries a TEMPLATE equivalent to it. That is written for ChatML-style templates (SmolLM2,
Qwen2, the tiny test models): the template is rendered on sample chats and must give exactly ChatML;
a default system turn the template inserts becomes SYSTEM (Ollama adds it to chats that have none,
as the template does). Any other template gets no TEMPLATE line, with a comment saying so: Ollama then
picks one of its own from the GGUF's chat template, which may differ.

Stop strings are the end-of-turn token and the run's decode.stop_strings; sampling defaults come from
the run's decode section (greedy decoding is temperature 0). repeat_penalty is always written because
Ollama's own default (1.1) is not tailor's (1.0).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tailor.config import Config
from tailor.errors import TailorError
from tailor.export import gguf_vocab

MARK = "# Written by tailor export"
NAME = "Modelfile"
GO_CHATML = ("{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
             "<|im_start|>assistant\n")
PROBES = [  # chats the HF template must render exactly as ChatML
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "How are you?\nFine?"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
]


def chatml(messages: list[dict]) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def chatml_default_system(tokenizer) -> tuple[bool, str | None]:
    """(the template renders ChatML, the system turn it adds to chats without one or None)."""
    if not gguf_vocab.chat_template(tokenizer):
        return False, None
    default = None
    try:
        rendered = [tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) for chat in PROBES]
    except Exception:
        return False, None
    head = "<|im_start|>system\n"
    if not PROBES[0][0]["role"] == "system" and rendered[0].startswith(head) and "<|im_end|>\n" in rendered[0]:
        default = rendered[0][len(head):].split("<|im_end|>\n", 1)[0]
    for chat, text in zip(PROBES, rendered):
        with_system = chat if chat[0]["role"] == "system" or default is None else \
            [{"role": "system", "content": default}, *chat]
        if text != chatml(with_system):
            return False, None
    return True, default


def run_settings(settings: Config | None) -> tuple[dict | None, str]:
    """The run's decode section as DecodeConfig fields (None when the run has no config) and system prompt."""
    if settings is None:
        return None, ""
    return dataclasses.asdict(settings.decode), settings.data.system_prompt or ""


def _quote(value: str) -> str:
    if '"""' in value:
        raise TailorError(f'the Modelfile cannot hold {value!r}: Ollama has no way to quote """ inside a value.')
    return f'"""{value}"""' if ('"' in value or "\n" in value or value != value.strip()) else f'"{value}"'


def stop_strings(tokenizer, decode: dict | None) -> list[str]:
    eot = gguf_vocab.end_of_turn(tokenizer)
    stops = [eot] if eot else []
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    return stops + [s for s in (decode or {}).get("stop_strings", []) if s not in stops]


def modelfile_text(gguf_name: str, tokenizer, settings: Config | None = None) -> tuple[str, list[str]]:
    """The Modelfile, and notes for the user (empty when it renders chats exactly as the chat template)."""
    decode, run_system = run_settings(settings)
    is_chatml, default_system = chatml_default_system(tokenizer)
    lines, notes = [f"{MARK} (Ollama: ollama create NAME -f {NAME})", f"FROM ./{gguf_name}"], []
    if is_chatml:
        lines.append(f'TEMPLATE """{GO_CHATML}"""')
        system = run_system or default_system
        if system:
            lines.append(f"SYSTEM {_quote(system)}")
    else:
        note = ("the chat template is not ChatML, so no TEMPLATE was written: Ollama picks its own from the GGUF's "
                "chat template, which may render prompts differently from tailor; check with `ollama show --template`")
        lines.append(f"# {note}")
        notes.append(note)
    for stop in stop_strings(tokenizer, decode):
        lines.append(f"PARAMETER stop {_quote(stop)}")
    if decode is not None:
        if decode["do_sample"]:
            lines += [f"PARAMETER temperature {decode['temperature']}", f"PARAMETER top_k {decode['top_k']}",
                      f"PARAMETER top_p {decode['top_p']}", f"PARAMETER seed {decode['seed']}"]
        else:
            lines.append("PARAMETER temperature 0")  # tailor decodes greedily unless decode.do_sample
        lines.append(f"PARAMETER repeat_penalty {decode['repetition_penalty']}")
        lines.append(f"PARAMETER num_predict {decode['max_new_tokens']}")
    return "\n".join(lines) + "\n", notes


def written_by_tailor(path: Path) -> bool:
    try:
        return path.read_text(errors="replace").startswith(MARK)
    except OSError:
        return False


def check_writable(gguf: Path, overwrite: bool) -> Path:
    """The Modelfile path beside `gguf`; TailorError if a Modelfile tailor did not write is there."""
    path = gguf.parent / NAME
    if path.exists() and not overwrite and not written_by_tailor(path):
        raise TailorError(f"{path} exists and was not written by tailor; pass --overwrite to replace it.")
    return path


def write_modelfile(gguf: Path, tokenizer, settings: Config | None = None, overwrite: bool = False) -> tuple[Path, list[str]]:
    """`settings`: the run's config (tailor.runs.Loaded.settings), None for a model without one."""
    path = check_writable(gguf, overwrite)
    text, notes = modelfile_text(gguf.name, tokenizer, settings)
    tmp = path.with_name(f".{NAME}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path, notes


def instructions(text: str) -> dict[str, list[str]]:
    """A Modelfile's values by instruction ("FROM", "TEMPLATE", "PARAMETER stop", ...), quotes removed."""
    out: dict[str, list[str]] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, arg = line.strip().partition(" ")
        key = word.upper()
        if key == "PARAMETER":
            name, _, arg = arg.strip().partition(" ")
            key = f"PARAMETER {name}"
        arg = arg.strip()
        if arg.startswith('"""'):
            arg = arg[3:]
            while '"""' not in arg:
                arg += "\n" + next(lines, '"""')
            arg = arg.split('"""', 1)[0]
        elif len(arg) > 1 and arg[0] == arg[-1] == '"':
            arg = arg[1:-1]
        out.setdefault(key, []).append(arg)
    return out
