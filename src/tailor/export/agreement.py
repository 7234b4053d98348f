"""Do the run's tokenizer, tailor serve and an exported GGUF/Modelfile agree on chat template and special tokens?

The reference is the run's own tokenizer (model/ folder) with its tailor.yaml: that is what training
rendered and tokenized conversations with. Each other place is compared with it, and every
disagreement comes back as a Finding saying where, what differs and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tailor.config import Config
from tailor.errors import TailorError
from tailor.export import gguf_vocab, modelfile

PROBE = [{"role": "user", "content": "Hello, how are you?"}, {"role": "assistant", "content": "Fine, thanks."},
         {"role": "user", "content": "Good. What is 2 + 3?"}]


@dataclass
class Finding:
    where: str  # "server", "GGUF <file>", "Modelfile <file>", "run"
    what: str
    fix: str


@dataclass
class Run:
    folder: Path
    tokenizer: object
    settings: Config | None  # the run's config, None when the folder has none

    @property
    def cfg(self) -> Config:  # what tailor serve reads its defaults from (serve.app.run_settings)
        return self.settings or Config()

    @property
    def system_prompt(self) -> str:
        return modelfile.run_settings(self.settings)[1]


def open_run(path: str | Path) -> Run:
    """The run's tokenizer and config, read as the run reader reads them (no weights: doctor checks tokens)."""
    from tailor.models.load import load_tokenizer
    from tailor.runs import model_folder, run_config

    folder = model_folder(path)
    if not (folder / "tokenizer_config.json").is_file() and not (folder / "tokenizer.json").is_file():
        raise TailorError(f"{folder} has no tokenizer files (tokenizer.json / tokenizer_config.json) to check.")
    return Run(folder, load_tokenizer(str(folder)), run_config(folder, strict=False)[0])


def training_rendering(run: Run, chat: list[dict]) -> str:
    """How training rendered a conversation: the run's system prompt (data.system_prompt) before the history."""
    if run.system_prompt and chat[0]["role"] != "system":
        chat = [{"role": "system", "content": run.system_prompt}, *chat]
    return run.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def check_run(run: Run) -> list[Finding]:
    if gguf_vocab.chat_template(run.tokenizer):
        return []
    return [Finding("run", f"the tokenizer in {run.folder} has no chat template",
                    "set one (tokenizer.chat_template in tokenizer_config.json) before serving or exporting chats")]


def check_server(run: Run) -> list[Finding]:
    """tailor serve's prompt rendering and stop tokens, as src/tailor/serve/app.py computes them."""
    from tailor.generate.replies import stop_ids
    from tailor.serve.app import run_settings

    out, tok = [], run.tokenizer
    if not gguf_vocab.chat_template(tok):
        return out
    _, system = run_settings(run)
    chat = [{"role": "system", "content": system}, *PROBE] if system else PROBE
    served = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    if served != training_rendering(run, PROBE):
        out.append(Finding("server", "tailor serve renders chats differently from training (system prompt "
                           f"{system!r} vs data.system_prompt {run.system_prompt!r})",
                           f"make data.system_prompt in {run.folder / 'tailor.yaml'} the prompt the server should use"))
    eot = gguf_vocab.end_of_turn(tok)
    if eot and tok.convert_tokens_to_ids(eot) not in stop_ids(tok):
        out.append(Finding("server", f"the chat template ends turns with {eot!r} but tailor serve does not stop on it "
                           f"(it stops on {[tok.convert_ids_to_tokens(i) for i in stop_ids(tok)]})",
                           f"set the tokenizer's eos_token to {eot!r} in {run.folder / 'tokenizer_config.json'}"))
    return out


def _gguf_fields(path: Path) -> dict:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as e:  # not a GGUF file, or a truncated one
        raise TailorError(f"{path} is not a readable GGUF file: {e}") from None
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


def check_gguf(run: Run, path: Path) -> list[Finding]:
    tok, where = run.tokenizer, f"GGUF {path}"
    fix = f"re-export it: tailor export {run.folder} --gguf {path} --overwrite"
    meta = _gguf_fields(path)
    out = []

    def differ(what: str) -> None:
        out.append(Finding(where, what, fix))

    if meta.get("tokenizer.chat_template") != gguf_vocab.chat_template(tok):
        differ("its chat template differs from the run's tokenizer's" if meta.get("tokenizer.chat_template")
               else "it has no chat template")
    tokens = meta.get("tokenizer.ggml.tokens") or []
    try:
        vocab = gguf_vocab.vocab_fields(tok, len(tokens) or len(tok))
    except TailorError as e:
        differ(f"the run's tokenizer cannot be written to GGUF at all: {e}")
        return out
    changed = sum(a != b for a, b in zip(tokens, vocab.tokens))
    if len(tokens) < len(tok) or changed:
        differ(f"its vocabulary differs from the run's tokenizer ({len(tokens)} tokens, {changed} changed; "
               f"the tokenizer has {len(tok)})")
    if meta.get("tokenizer.ggml.merges") != vocab.merges:
        differ("its BPE merges differ from the run's tokenizer's")
    if meta.get("tokenizer.ggml.pre") != vocab.pre:
        differ(f"its pre-tokenizer is {meta.get('tokenizer.ggml.pre')!r}; the run's tokenizer splits text like "
               f"llama.cpp's {vocab.pre!r}")
    special = gguf_vocab.special_ids(tok)

    def name(token_id):
        return None if token_id is None or not 0 <= token_id < len(tokens) else tokens[token_id]

    for key, want in (("bos", special.bos), ("eos", special.eos), ("eot", special.eot)):
        got = meta.get(f"tokenizer.ggml.{key}_token_id")
        if got != want:
            differ(f"its {key} token is {name(got)!r} (id {got}); the run's is {name(want)!r} (id {want})"
                   + (" - runtimes would not stop at the end of the assistant's turn" if key in ("eos", "eot") else ""))
    if bool(meta.get("tokenizer.ggml.add_bos_token")) != special.add_bos:
        differ(f"it says add_bos_token={bool(meta.get('tokenizer.ggml.add_bos_token'))}; the run's tokenizer "
               f"{'adds' if special.add_bos else 'does not add'} a BOS token")
    return out


def check_modelfile(run: Run, gguf: Path) -> list[Finding]:
    """The Modelfile beside `gguf`, against the one tailor would write for this run now."""
    path = gguf.parent / modelfile.NAME
    if not path.is_file():
        return []
    where, fix = f"Modelfile {path}", f"re-export: tailor export {run.folder} --gguf {gguf} --overwrite"
    got = modelfile.instructions(path.read_text())
    want = modelfile.instructions(modelfile.modelfile_text(gguf.name, run.tokenizer, run.settings)[0])
    out = []
    if got.get("FROM") not in ([f"./{gguf.name}"], [gguf.name], [str(gguf)]):
        out.append(Finding(where, f"FROM is {got.get('FROM')}, not the GGUF {gguf.name}", fix))
    for key, what in (("TEMPLATE", "its TEMPLATE"), ("SYSTEM", "its SYSTEM prompt"),
                      ("PARAMETER stop", "its stop strings")):
        if sorted(got.get(key, [])) != sorted(want.get(key, [])):
            out.append(Finding(where, f"{what} differs from the run's ({got.get(key)} vs {want.get(key)})", fix))
    return out
