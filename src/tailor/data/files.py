"""Reading users' files: every way a file can be unreadable becomes a TailorError that names it.

Every reader (data sources, prompt files, config files) goes through here, so a missing file, a folder,
a permission problem or bytes that are not UTF-8 read the same everywhere: file, line, what to do.

Lines end at "\\n" (a "\\r" before it is dropped, so Windows files read the same). str.splitlines() is
not used: it also breaks at U+2028, U+2029, U+0085, form feed and a few more, which are valid inside a
JSON string or a sentence, so it would report wrong line numbers and silently misalign line-aligned files.
A UTF-8 byte order mark, which Windows editors write, is skipped.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from tailor.errors import TailorError

#: Deeper JSON/YAML than this is refused: no tailor input nests like that, and deeper values break
#: recursive code further on (json.dumps, yaml.dump, the chat template) with a RecursionError.
MAX_DEPTH = 64


def read_text(path: str | Path, what: str = "data file") -> str:
    """The file's text, decoded as UTF-8 (a leading byte order mark dropped)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TailorError(f"{what} {path} does not exist.") from None
    except IsADirectoryError:
        raise TailorError(f"{what} {path} is a folder, not a file.") from None
    except PermissionError:
        raise TailorError(f"{what} {path} cannot be read: permission denied. Check the file's permissions "
                          "(chmod u+r).") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise TailorError(f"{what} {path} cannot be read ({getattr(e, 'strerror', None) or e}).") from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise TailorError(f"{path}, line {line}: not valid UTF-8 (byte {data[e.start]:#x}); re-encode the file "
                          "as UTF-8.") from None


def split_lines(text: str) -> list[str]:
    """Lines split at "\\n" only, "\\r\\n" read as "\\n"; no empty last line for a final newline.

    >>> split_lines("a\\u2028b\\r\\nc\\x0cd\\n")
    ['a\\u2028b', 'c\\x0cd']
    """
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_lines(path: str | Path, what: str = "data file") -> list[str]:
    return split_lines(read_text(path, what))


def not_text(value: object) -> str | None:
    """Why a parsed JSON/YAML value cannot be used, or None: nested deeper than MAX_DEPTH, or a string
    holding a lone surrogate (a "\\ud800" escape), which is not text and cannot be encoded or tokenized."""
    stack = [("", value, 0)]
    while stack:
        where, v, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(v, str):
            if not encodable(v):
                return (f"{'field ' + where if where else 'a string'} holds a lone surrogate escape such as "
                        "\\ud800, which is not text; write the character itself or drop the escape")
        elif isinstance(v, dict):
            for key, item in reversed(list(v.items())):
                if isinstance(key, str) and not encodable(key):
                    return f"a key in {where or 'the object'} holds a lone surrogate escape such as \\ud800"
                stack.append((f"{where}.{key}" if where else str(key), item, depth + 1))
        elif isinstance(v, list):
            stack += [(f"{where}[{i}]", item, depth + 1) for i, item in reversed(list(enumerate(v)))]
    return None


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_json(line: str, where: str) -> object:
    """One JSON value; every way it can fail is a TailorError starting with `where`."""
    try:
        value = json.loads(line)
    except RecursionError:
        raise TailorError(f"{where}: JSON nested deeper than Python can read.") from None
    except json.JSONDecodeError as e:
        raise TailorError(f"{where}: not valid JSON ({e.msg} at column {e.colno}).") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise TailorError(f"{where}: not valid JSON ({e}).") from None
    problem = not_text(value)
    if problem:
        raise TailorError(f"{where}: {problem}.")
    return value
