"""Records of the three splits for the table-shaped tasks (translation, classification, text).

Each split comes from its own source when `data.validation_source` / `data.test_source` is set;
otherwise it is carved out of `data.source` by a hash of the record's content (data/content.py: the
normalised text of the task's key fields), so a duplicated row lands in one split only and the split does
not depend on ids, file order or seed. With `data.dedupe` the exact repeats (every field the task reads
equal) are dropped first, the first of each kept.
"""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tailor.config import Config
from tailor.data import content
from tailor.data.tables import pick, read_rows
from tailor.errors import TailorError

SPLITS = ("train", "validation", "test")


@dataclass
class Splits:
    train: list[dict]
    validation: list[dict]
    test: list[dict]
    stats: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> list[dict]:
        return getattr(self, name)

    def compacted(self) -> Splits:
        """The same splits in new objects, so that what they were cut from can be freed whole.

        CPython gives an arena of small objects (strings, dicts, lists of token ids) back to the system only
        when every object in it is gone. The kept samples are made while a whole source is parsed, so their
        objects lie among the source's in most of its arenas, and hold them after the rest is freed. For the
        demo's 1,495 samples the copy frees 95 MiB of the parsed chitchat corpus for the rest of the run:
        anonymous memory 494 -> 399 MiB (`benchmarks/data_memory.py`). A pickle round trip makes every object
        afresh, strings included, where copy.deepcopy would share them. The copies are made while the source is
        still there, so some land in its arenas' holes and keep those: `made_afresh` frees more."""
        return pickle.loads(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))


def made_afresh(make: Callable[[], Splits]) -> Splits:
    """The splits `make()` returns, made afresh (as `Splits.compacted`) only once they, and all `make` parsed, are
    freed: pickled, dropped, unpickled. No new object lands among the source's, so the source's arenas are all
    given back (the demo's setup: anonymous memory 344 MiB, against 399 with `compacted`; benchmarks/data_memory.py)."""
    blob = pickle.dumps(make(), protocol=pickle.HIGHEST_PROTOCOL)  # make()'s splits are freed here
    return pickle.loads(blob)


def cap(samples: list[dict], limit: int, salt: str) -> list[dict]:
    """At most `limit` samples (0 = all), drawn deterministically."""
    if not limit or len(samples) <= limit:
        return samples
    picked = list(samples)
    random.Random(salt).shuffle(picked)
    return picked[:limit]


bucket = content.bucket


def content_key(record: dict, fields: list[str]) -> str:
    """What a record's split is drawn from, and what makes it a duplicate: its normalised `fields`."""
    return content.record_key(record, fields)


def source_of(cfg: Config, split: str):
    return {"train": cfg.data.source, "validation": cfg.data.validation_source, "test": cfg.data.test_source}[split]


def load_records(cfg: Config, required: list[str], optional: tuple[str, ...] = (), key_fields: list[str] | None = None) -> dict[str, list[dict]]:
    """{split: [record, ...]} with the task's field names, before any cap."""
    d = cfg.data
    if d.source == "chitchat":
        raise TailorError(f"task '{cfg.task}' needs data.source: a file, folder or {{column: file}} mapping "
                          "('chitchat' is dialogue data).")
    out, _ = source_splits(cfg, required, optional, key_fields)
    for split in SPLITS:
        if not out[split]:
            raise TailorError(f"data source {source_of(cfg, split) or d.source}: the {split} split is empty. Add data, "
                              f"set data.{split}_source, or change data.val_fraction / data.test_fraction.")
    return out


def source_splits(cfg: Config, required: list[str], optional: tuple[str, ...] = (), key_fields: list[str] | None = None,
                  findings: list | None = None) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """({split: records}, {split: repeats}) where a split's repeats are the records of its source (data.source
    for "train") that repeat an earlier record of that source exactly: every `required` field equal once
    normalised. data.dedupe drops them; otherwise they stay, and a repeat in data.source shares its first
    copy's split. `findings`: as read_records (tailor data check), else the first bad row stops."""
    key_fields = key_fields or required[:1]
    d = cfg.data

    def read(source, split: str) -> tuple[list[dict], list[dict]]:
        records = read_records(cfg, source, split, required, optional, findings)
        kept, repeats = content.first_occurrences(records, lambda r: content_key(r, required))
        return (kept if d.dedupe else records), repeats

    records, repeats = read(d.source, "train")
    out = split_records(cfg, records, key_fields)
    found = {"train": repeats}
    for split in ("validation", "test"):
        if source_of(cfg, split) is not None:
            out[split], found[split] = read(source_of(cfg, split), split)
    return out, found


def read_records(cfg: Config, source, split: str, fields: list[str], optional: tuple[str, ...] = (),
                 findings: list | None = None) -> list[dict]:
    """The records of one source, checked as `tailor data check` checks them: the columns are there, the
    texts are non-empty strings, a classification label is one of the classes. Training (no `findings`)
    stops at the first problem; data check passes a list, which gets every problem while the bad rows
    are left out. One code path, so the two cannot disagree about a row."""
    from tailor.data.check import check_texts, finding

    def found(where: str, error: TailorError) -> dict:
        return finding("error", where, str(error).removeprefix(f"{where}: ").removesuffix("."))

    problems = None if findings is None else []
    rows = read_rows(source, split, problems)
    if findings is not None:
        findings.extend(finding("error", *p.split(": ", 1)) for p in problems)
    names = None
    if cfg.task == "classification":
        from tailor.tasks.classification import label_id, label_names

        try:
            names = label_names(cfg)
        except TailorError as e:
            if findings is None:
                raise
            if split == "train":  # one finding, not one per source
                findings.append(found(str(cfg.data.source), e))
    records = []
    for row in rows:
        try:
            record = pick([row], cfg.data.columns, fields, optional)[0]
        except TailorError as e:
            problems_here = [found(row["origin"], e)]
        else:
            problems_here = check_texts(record, [f for f in fields if f != "label"])
            if names is not None:
                try:
                    label_id(record["label"], names, record["origin"])
                except TailorError as e:
                    problems_here.append(found(record["origin"], e))
        if findings is not None:
            findings.extend(problems_here)
        elif problems_here:
            first = problems_here[0]
            raise TailorError(f"{first['where']}: {first['message']}.")
        if not any(f["level"] == "error" for f in problems_here):
            records.append(record)
    return records


def split_records(cfg: Config, records: list[dict], key_fields: list[str]) -> dict[str, list[dict]]:
    """Deal the records of data.source into splits: those with their own source stay empty here."""
    d = cfg.data
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for record in records:
        if d.validation_source is None or d.test_source is None:
            b = bucket(content_key(record, key_fields))
            if d.test_source is None and b < d.test_fraction:
                out["test"].append(record)
                continue
            if d.validation_source is None and b >= 1 - d.val_fraction:
                out["validation"].append(record)
                continue
        out["train"].append(record)
    return out


def limits(cfg: Config) -> dict[str, int]:
    d = cfg.data
    return {"train": d.max_train_samples, "validation": d.max_val_samples, "test": d.max_test_samples}


def check_context(cfg: Config, context: int) -> None:
    if cfg.model.max_length > context:
        raise TailorError(f"model.max_length={cfg.model.max_length} is longer than the model's context of {context} "
                          f"tokens; set model.max_length to at most {context}.")


def text_field(record: dict, name: str) -> str:
    value = record[name]
    if not isinstance(value, str):
        raise TailorError(f"{record['origin']}: field '{name}' must be text, got {type(value).__name__} {value!r}.")
    return value
