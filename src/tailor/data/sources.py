"""Read conversations from the embedded chitchat package or a JSONL file.

A conversation is a plain dict:
    {"id": "a07e...", "origin": "data.jsonl:12",
     "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tailor.errors import TailorError

ROLES = ("system", "user", "assistant")


def chitchat_path() -> Path:
    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or spec.origin is None:
        raise TailorError("data source 'chitchat' needs the chitchat-dataset package: pip install chitchat-dataset==0.9.0.")
    return Path(spec.origin).parent / "dataset.json"


def read_chitchat(path: Path | None = None) -> list[dict]:
    """Each chitchat turn is a run of messages by one sender; turns alternate user/assistant."""
    path = path or chitchat_path()
    raw = json.loads(path.read_text())
    conversations = []
    for conv_id, conv in raw.items():
        messages = []
        for i, turn in enumerate(conv["messages"]):
            text = " ".join(u["text"].strip() for u in turn if u["text"].strip())
            if text:
                messages.append({"role": "user" if len(messages) % 2 == 0 else "assistant", "content": text})
        conversations.append({"id": conv_id, "origin": f"{path.name}:{conv_id}", "messages": messages})
    return conversations


def check_messages(messages: object, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise TailorError(f"{where}: field 'messages' must be a non-empty list of {{role, content}} objects.")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise TailorError(f"{where}: messages[{i}] must be an object with 'role' and 'content'.")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise TailorError(f"{where}: messages[{i}].role is {role!r}; expected one of {', '.join(ROLES)}.")
        if not isinstance(content, str):
            raise TailorError(f"{where}: messages[{i}].content must be a string, got {type(content).__name__}.")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise TailorError(f"data file {path} does not exist.")
    conversations = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TailorError(f"{where}: not valid JSON ({e.msg} at column {e.colno}).") from None
            if not isinstance(row, dict) or "messages" not in row:
                raise TailorError(f"{where}: missing field 'messages' (expected {{\"messages\": [{{\"role\", \"content\"}}, ...]}}).")
            messages = check_messages(row["messages"], where)
            conv_id = str(row.get("id", f"{path.name}:{lineno}"))
            conversations.append({"id": conv_id, "origin": f"{path}:{lineno}", "messages": messages})
    return conversations


def read_conversations(source: str) -> list[dict]:
    if source == "chitchat":
        conversations = read_chitchat()
    else:
        path = Path(source)
        if path.suffix not in (".jsonl", ".json"):
            raise TailorError(f"data source {source}: expected 'chitchat' or a .jsonl file of conversations.")
        conversations = read_jsonl(path)
    if not conversations:
        raise TailorError(f"data source {source} holds no conversations.")
    return conversations
