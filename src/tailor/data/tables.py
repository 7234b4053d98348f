"""Read tabular sources into rows, each remembering where it came from.

A row is a plain dict: {"origin": "data/train.tsv:2", "values": {"sentence": "...", "label": "1"}}.
`origin` is what error messages and `tailor data check` name, so it is the file and line (or row
number where a format has no lines).

Sources (one per split, see `data.source`, `data.validation_source`, `data.test_source`):
- `x.jsonl`                one JSON object per line
- `x.csv`, `x.tsv`         a header line, then one row per line (TSV is read without quoting, as GLUE writes it)
- `x.parquet`              one row per table row
- `x.txt` (any other file) one row {"text": line} per non-empty line
- a folder                 written by `datasets`' `save_to_disk` (a Dataset, or a DatasetDict whose split
                           matching the role is used: train / validation / test)
- {column: file, ...}      line-aligned text files zipped into rows, e.g. {en: train.en, de: train.de}

>>> pick([{"origin": "f:2", "values": {"sentence": "good", "label": "1"}}], {"text": "sentence"}, ["text", "label"])
[{'text': 'good', 'label': '1', 'origin': 'f:2'}]
"""

from __future__ import annotations

import csv
from pathlib import Path

from tailor.data.files import parse_json, read_lines
from tailor.errors import TailorError

TEXT_SUFFIXES = (".txt", ".text", ".utf8", "")


def read_parallel(files: dict[str, str]) -> list[dict]:
    """Line i of each file forms row i; the files must have as many lines as each other."""
    for name, path in files.items():
        if not isinstance(path, str):
            raise TailorError(f"data source {{column: file}}: the file of column '{name}' must be a path, got {path!r}.")
    columns = {name: read_lines(Path(path)) for name, path in files.items()}
    counts = {name: len(lines) for name, lines in columns.items()}
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{files[n]} has {c}" for n, c in counts.items())
        raise TailorError(f"line-aligned files differ in length ({detail} lines); line i of each must be "
                          "the same sample.")
    first = Path(next(iter(files.values())))
    n = next(iter(counts.values()), 0)
    return [{"origin": f"{first}:{i + 1}", "values": {name: columns[name][i] for name in columns}} for i in range(n)]


def _bad(problems: list | None, message: str) -> None:
    """Raise, or (when linting) note the problem and go on with the next row."""
    if problems is None:
        raise TailorError(message)
    problems.append(message)


def read_jsonl(path: Path, problems: list | None = None) -> list[dict]:
    rows = []
    for lineno, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            value = parse_json(line, f"{path}, line {lineno}")
        except TailorError as e:
            _bad(problems, str(e))
            continue
        if not isinstance(value, dict):
            _bad(problems, f"{path}, line {lineno}: expected a JSON object, got {type(value).__name__}.")
            continue
        rows.append({"origin": f"{path}:{lineno}", "values": value})
    return rows


def read_delimited(path: Path, delimiter: str, problems: list | None = None) -> list[dict]:
    lines = read_lines(path)
    if not lines:
        return []
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    rows = []
    try:
        header = next(reader)
        if len(set(header)) != len(header):
            raise TailorError(f"{path}, line 1: the header repeats a column name ({', '.join(header)}).")
        for cells in reader:
            lineno = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                _bad(problems, f"{path}, line {lineno}: {len(cells)} fields, but the header has {len(header)} "
                               f"({', '.join(header)}).")
                continue
            rows.append({"origin": f"{path}:{lineno}", "values": dict(zip(header, cells))})
    except csv.Error as e:  # a NUL byte, a lone carriage return, an overlong field
        kind = "TSV" if delimiter == "\t" else "CSV"
        raise TailorError(f"{path}, line {reader.line_num}: not a valid {kind} row ({e}).") from None
    return rows


def read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise TailorError(f"data file {path} does not exist.")
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise TailorError(f"{path}: not a readable Parquet file ({e}).") from None
    return [{"origin": f"{path}:row {i + 1}", "values": v} for i, v in enumerate(table.to_pylist())]


def read_saved_dataset(path: Path, split: str) -> list[dict]:
    import datasets

    try:
        saved = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise TailorError(f"{path}: not a folder written by datasets' save_to_disk ({e}).") from None
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise TailorError(f"{path}: the saved DatasetDict has splits {', '.join(saved)}, none named '{split}'; "
                              f"point data.{'source' if split == 'train' else split + '_source'} at one of them "
                              f"({path}/<split>).")
        saved, where = saved[split], f"{path}[{split}]"
    else:
        where = str(path)
    return [{"origin": f"{where}:row {i + 1}", "values": v} for i, v in enumerate(saved)]


# A task's split names as datasets on the hub spell them, most common first.
HUB_SPLITS = {"train": ("train",), "validation": ("validation", "valid", "dev", "val"), "test": ("test",)}


def read_hub_dataset(spec: str, split: str) -> list[dict]:
    """`hf:NAME[:CONFIG]`: a split of a Hugging Face hub dataset (needs the network, or datasets' cache)."""
    import datasets

    name, _, config = spec.partition(":")
    try:
        available = datasets.get_dataset_split_names(name, config or None)
    except Exception as e:  # no network, unknown name, gated dataset: datasets raises many types
        raise TailorError(f"data source hf:{spec}: could not read the dataset's splits from the Hugging Face hub "
                          f"({type(e).__name__}: {str(e)[:200]}). It needs network access; offline, save it once with "
                          "datasets' save_to_disk and point data.source at that folder.") from None
    chosen = next((s for s in HUB_SPLITS.get(split, (split,)) if s in available), None)
    if chosen is None:
        raise TailorError(f"data source hf:{spec} has splits {', '.join(available)}, none for '{split}'.")
    try:
        rows = datasets.load_dataset(name, config or None, split=chosen)
    except Exception as e:
        raise TailorError(f"data source hf:{spec}: could not load split '{chosen}' ({type(e).__name__}: {str(e)[:200]}).") from None
    return [{"origin": f"hf:{spec}[{chosen}]:row {i + 1}", "values": v} for i, v in enumerate(rows)]


def read_plain(path: Path) -> list[dict]:
    return [{"origin": f"{path}:{i}", "values": {"text": line}} for i, line in enumerate(read_lines(path), 1) if line.strip()]


def read_rows(source: str | dict[str, str], split: str = "train", problems: list | None = None) -> list[dict]:
    """All rows of one source. `split` picks the split of a saved DatasetDict. With `problems` (a list),
    malformed JSONL/CSV/TSV rows are noted there and skipped instead of stopping at the first."""
    if isinstance(source, dict):
        if not source:
            raise TailorError("data source: an empty mapping; expected {column: file, ...}.")
        return read_parallel(source)
    if source.startswith("hf:"):
        return read_hub_dataset(source[3:], split)
    path = Path(source)
    if path.is_dir():
        return read_saved_dataset(path, split)
    if not path.exists():
        raise TailorError(f"data source {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return read_jsonl(path, problems)
    if suffix == ".csv":
        return read_delimited(path, ",", problems)
    if suffix == ".tsv":
        return read_delimited(path, "\t", problems)
    if suffix == ".parquet":
        return read_parquet(path)
    return read_plain(path)


def pick(rows: list[dict], columns: dict[str, str], required: list[str], optional: tuple[str, ...] = ()) -> list[dict]:
    """Records with the task's field names: {field: value, ..., "origin"}; a missing column is an error
    naming the row and the `data.columns` entry that points at it."""
    unknown = set(columns) - set(required) - set(optional)
    if unknown:
        raise TailorError(f"data.columns: unknown field(s) {', '.join(sorted(unknown))}; this task reads "
                          f"{', '.join(list(required) + list(optional))}.")
    out = []
    for row in rows:
        values = row["values"]
        record = {}
        for field in list(required) + list(optional):
            column = columns.get(field, field)
            if column not in values or values[column] is None:
                if field in optional:
                    continue
                setting = f"data.columns.{field}" if field in columns else f"data.columns.{field} (default '{field}')"
                have = ", ".join(map(str, values)) or "none"
                raise TailorError(f"{row['origin']}: no value in column '{column}' ({setting}); "
                                  f"columns here: {have}.")
            record[field] = values[column]
        record["origin"] = row["origin"]
        out.append(record)
    return out
