"""Dialogue files as people have them: OpenAI `messages`, ShareGPT `conversations`, Alpaca instructions.

Each row becomes OpenAI-style {"messages": [{"role", "content"}, ...]} before any check, so one set of
checks (data/check.py) names what is wrong in any of them. The mapping is structural: a ShareGPT turn
from an unknown speaker keeps that name as its role, and the check then names the row and the turn.

    >>> to_messages({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]})["messages"]
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello'}]
    >>> to_messages({"instruction": "Add", "input": "2 and 3", "output": "5"})["messages"][0]["content"]
    'Add\\n\\n2 and 3'
"""

from __future__ import annotations

from tailor.errors import TailorError

FORMATS = ("auto", "openai", "sharegpt", "alpaca")
# ShareGPT speakers as the datasets that use the format name them.
SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
            "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}


def detect(values: dict) -> str:
    """The format of one row, from its fields."""
    if "messages" in values:
        return "openai"
    if "conversations" in values:
        return "sharegpt"
    if "instruction" in values and "output" in values:
        return "alpaca"
    return "openai"  # the check then says which field is missing


def to_messages(values: dict, fmt: str = "auto") -> dict:
    """The row's fields with `messages` in OpenAI form (the others, e.g. `id`, kept)."""
    if fmt not in FORMATS:
        raise TailorError(f"data.format '{fmt}' is not one of {', '.join(FORMATS)}.")
    fmt = detect(values) if fmt == "auto" else fmt
    if fmt == "sharegpt" and "conversations" in values:
        turns = values["conversations"]
        if not isinstance(turns, list):
            return {**values, "messages": turns}  # not a list: the check names it
        messages = [{"role": SPEAKERS.get(t.get("from"), t.get("from")), "content": t.get("value")}
                    if isinstance(t, dict) else t for t in turns]
        return {**{k: v for k, v in values.items() if k != "conversations"}, "messages": messages}
    if fmt == "alpaca" and "instruction" in values:
        prompt = values.get("instruction")
        extra = values.get("input")
        if isinstance(prompt, str) and isinstance(extra, str) and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        system = values.get("system")
        messages = ([{"role": "system", "content": system}] if isinstance(system, str) and system.strip() else []) + [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": values.get("output")}]
        rest = {k: v for k, v in values.items() if k not in ("instruction", "input", "output", "system")}
        return {**rest, "messages": messages}
    return values
