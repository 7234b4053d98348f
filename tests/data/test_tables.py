import json

import pytest

from tailor.data.tables import pick, read_rows
from tailor.errors import TailorError

ROWS = [{"sentence": "good film", "label": 1}, {"sentence": "bad \"film\"", "label": 0}]


def values(rows):
    return [r["values"] for r in rows]


def test_jsonl_csv_tsv_parquet_and_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "d.csv").write_text('sentence,label\ngood film,1\n"bad ""film""",0\n')
    (tmp_path / "d.tsv").write_text('sentence\tlabel\ngood film\t1\nbad "film"\t0\n')  # GLUE-style: quotes are text
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    (tmp_path / "d.txt").write_text("first line\n\nsecond line\n")
    assert values(read_rows(str(tmp_path / "d.jsonl"))) == ROWS
    assert values(read_rows(str(tmp_path / "d.parquet"))) == ROWS
    text_rows = [{"sentence": r["sentence"], "label": str(r["label"])} for r in ROWS]
    assert values(read_rows(str(tmp_path / "d.csv"))) == text_rows
    assert values(read_rows(str(tmp_path / "d.tsv"))) == text_rows
    txt = read_rows(str(tmp_path / "d.txt"))
    assert values(txt) == [{"text": "first line"}, {"text": "second line"}]
    assert txt[1]["origin"].endswith("d.txt:3")  # origins are real line numbers
    assert read_rows(str(tmp_path / "d.csv"))[1]["origin"].endswith("d.csv:3")
    assert read_rows(str(tmp_path / "d.parquet"))[0]["origin"].endswith("d.parquet:row 1")


def test_saved_datasets_folders(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(str(tmp_path / "one"))
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dict"))
    assert values(read_rows(str(tmp_path / "one"))) == ROWS
    assert values(read_rows(str(tmp_path / "dict"), "test")) == ROWS[:1]
    with pytest.raises(TailorError, match="none named 'validation'"):
        read_rows(str(tmp_path / "dict"), "validation")


def test_line_aligned_files(tmp_path):
    (tmp_path / "a.en").write_text("one\ntwo\n")
    (tmp_path / "a.de").write_text("eins\nzwei\n")
    rows = read_rows({"en": str(tmp_path / "a.en"), "de": str(tmp_path / "a.de")})
    assert values(rows) == [{"en": "one", "de": "eins"}, {"en": "two", "de": "zwei"}]
    assert rows[1]["origin"].endswith("a.en:2")


def test_bad_rows_are_named_by_file_and_line(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(TailorError, match=r"bad.jsonl, line 2: not valid JSON"):
        read_rows(str(bad_json))
    bad_tsv = tmp_path / "bad.tsv"
    bad_tsv.write_text("sentence\tlabel\nok\t1\ntoo\tmany\tfields\n")
    with pytest.raises(TailorError, match=r"bad.tsv, line 3: 3 fields, but the header has 2"):
        read_rows(str(bad_tsv))
    problems = []
    assert len(read_rows(str(bad_tsv), problems=problems)) == 1 and "line 3" in problems[0]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("fine\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(TailorError, match=r"latin.txt, line 2: not valid UTF-8"):
        read_rows(str(latin))


def test_column_mapping(tmp_path):
    rows = [{"origin": "f.tsv:2", "values": {"sentence": "good", "label": "1"}}]
    assert pick(rows, {"text": "sentence"}, ["text", "label"]) == [{"text": "good", "label": "1", "origin": "f.tsv:2"}]
    with pytest.raises(TailorError, match=r"f.tsv:2: no value in column 'text' \(data.columns.text \(default 'text'\)\); columns here: sentence, label"):
        pick(rows, {}, ["text", "label"])
    with pytest.raises(TailorError, match="unknown field"):
        pick(rows, {"txt": "sentence"}, ["text", "label"])
