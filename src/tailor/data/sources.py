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


def conversation_rows(source: object, problems: list | None = None, fmt: str = "auto") -> list[dict]:
    """The rows {"origin", "values"} of a dialogue source, in OpenAI `messages` form (data.format: ShareGPT
    and Alpaca rows are mapped, data/formats.py), before any check. With `problems` (a list), malformed
    JSONL lines are noted there and skipped (tailor data check) instead of stopping at the first."""
    from tailor.data.formats import to_messages
    from tailor.data.tables import read_jsonl as read_rows_of

    if source == "chitchat":
        return [{"origin": c["origin"], "values": {"messages": c["messages"], "id": c["id"]}} for c in read_chitchat()]
    if not isinstance(source, str):
        raise TailorError(f"data source {source!r}: the dialogue task reads 'chitchat' or a .jsonl file of "
                          "conversations, not a {column: file} mapping.")
    path = Path(source)
    if source.startswith("hf:") or path.is_dir():  # a hub dataset, or a folder from datasets' save_to_disk
        from tailor.data.tables import read_rows

        return [{**row, "values": to_messages(dict(row["values"]), fmt)} for row in read_rows(source, "train")]
    if path.suffix not in (".jsonl", ".json"):
        raise TailorError(f"data source {source}: expected 'chitchat' or a .jsonl file of conversations.")
    if not path.exists():
        raise TailorError(f"data file {path} does not exist.")
    return [{**row, "values": to_messages(row["values"], fmt) if isinstance(row["values"], dict) else row["values"]}
            for row in read_rows_of(path, problems)]


def conversation(row: dict) -> dict:
    """A checked row as a conversation {"id", "origin", "messages"}; the id defaults to file:line."""
    values = row["values"]
    conv_id = str(values.get("id", Path(row["origin"]).name))
    return {"id": conv_id, "origin": row["origin"],
            "messages": [{"role": m["role"], "content": m["content"]} for m in values["messages"]]}


def checked_conversations(rows: list[dict], findings: list | None = None) -> list[dict]:
    """The conversations of rows that pass tailor data check's checks (data/check.py). Without `findings`
    the first error is raised, so training refuses exactly what data check reports as an error; with a
    list, every finding is added to it and the rows with an error are left out."""
    from tailor.data.check import check_conversation, location

    conversations, errors = [], []
    for row in rows:
        found = check_conversation(row)
        if findings is not None:
            findings += found
        bad = [f for f in found if f["level"] == "error"]
        errors += bad
        if not bad:
            conversations.append(conversation(row))
    if errors and findings is None:
        first = errors[0]
        more = f" ({len(errors) - 1} more error(s); `tailor data check CONFIG` lists them all)" if len(errors) > 1 else ""
        raise TailorError(f"{location(first['where'])}: {first['message'].rstrip('.')}.{more}")
    return conversations


def read_jsonl(path: Path) -> list[dict]:
    """The conversations of a JSONL file; the first bad line is an error naming it."""
    return checked_conversations(conversation_rows(str(path)))


def read_conversations(source: object, fmt: str = "auto") -> list[dict]:
    conversations = checked_conversations(conversation_rows(source, fmt=fmt))
    if not conversations:
        raise TailorError(f"data source {source} holds no conversations.")
    return conversations
