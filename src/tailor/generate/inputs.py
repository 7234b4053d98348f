"""The prompts `tailor generate` and `tailor compare` work on (the model comes from tailor.runs.load).

Prompts come from the command line or a file:

    prompts.txt     one user message per line
    prompts.jsonl   {"prompt": "...", "reference": "..."} or {"messages": [...]} per line; with
                    "messages", a final assistant turn is the reference and the rest the history
"""

from __future__ import annotations

from pathlib import Path

from tailor.config import Config
from tailor.data.check import ROLES
from tailor.data.files import parse_json, read_lines
from tailor.errors import TailorError


def _prompt_record(data, where: str) -> dict:
    if isinstance(data, str):
        return {"messages": [{"role": "user", "content": data}], "origin": where}
    if not isinstance(data, dict):
        raise TailorError(f"{where}: expected a JSON object with 'prompt' or 'messages', got {data!r}.")
    if "messages" in data:
        messages = data["messages"]
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages)):
            raise TailorError(f"{where}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects "
                              f"(role one of {', '.join(ROLES)}).")
        for i, m in enumerate(messages):  # an empty turn gives the model nothing to answer (data check: an error)
            if not m["content"].strip():
                raise TailorError(f"{where}: messages[{i}].content ({m['role']}) is empty.")
        record = {"messages": messages, "origin": where}
        if messages[-1]["role"] == "assistant":
            record = {"messages": messages[:-1], "reference": messages[-1]["content"], "origin": where}
        if not record["messages"]:
            raise TailorError(f"{where}: 'messages' has no history before the assistant turn.")
        return record
    if "prompt" in data:
        if not isinstance(data["prompt"], str) or not data["prompt"].strip():
            raise TailorError(f"{where}: field 'prompt' must be a non-empty string.")
        record = {"messages": [{"role": "user", "content": data["prompt"]}], "origin": where}
        if "reference" in data:
            if not isinstance(data["reference"], str):
                raise TailorError(f"{where}: field 'reference' must be a string.")
            record["reference"] = data["reference"]
        return record
    raise TailorError(f"{where}: expected a field 'prompt' or 'messages'; found {', '.join(map(repr, data)) or 'none'}.")


def read_prompts(path: str | Path) -> list[dict]:
    """Prompt records {"messages": history, "reference"?: str, "origin": "file:line"} from a file."""
    path = Path(path)
    records = []
    for number, line in enumerate(read_lines(path, "prompt file"), 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        if path.suffix == ".jsonl":
            data = parse_json(line, where)
        else:
            data = line.strip()
        records.append(_prompt_record(data, where))
    if not records:
        raise TailorError(f"prompt file {path} has no prompts.")
    return records


def with_system_prompt(records: list[dict], system: str | None) -> list[dict]:
    if not system:
        return records
    return [r if r["messages"][0]["role"] == "system" else {**r, "messages": [{"role": "system", "content": system}] + r["messages"]}
            for r in records]


def prompt_tokens(tokenizer, messages: list[dict]) -> list[int]:
    """Chat-template the history when the tokenizer has a template; otherwise the raw text of the turns."""
    if getattr(tokenizer, "chat_template", None):
        from tailor.data.tokenize import prompt_ids

        return prompt_ids(tokenizer, messages)
    text = "\n".join(m["content"] for m in messages)
    return tokenizer(text)["input_ids"]


def decode_with_overrides(cfg: Config, overrides: list[str]):
    """cfg.decode with `decode.key=value` overrides applied (other sections are refused)."""
    from tailor.config import apply_overrides
    from tailor.config.base import build, to_dict
    from tailor.config.decode import DecodeConfig

    for item in overrides:
        if not item.startswith("decode."):
            raise TailorError(f"override '{item}': only decoding settings (decode.key=value) apply here.")
    data = apply_overrides({"decode": to_dict(cfg.decode)}, overrides)
    return build(DecodeConfig, data["decode"], "decode")
