"""Atomic writes hold when several writers race on one path (two search workers drawing the same plot)."""

import threading

from tailor.fsutil import write_bytes


def test_writers_racing_on_one_path_each_finish_and_leave_one_whole_file(tmp_path):
    path = tmp_path / "plot.png"
    contents = [bytes([n]) * 100_000 for n in range(4)]
    errors = []

    def write(data):
        try:
            for _ in range(50):
                write_bytes(path, data)
        except OSError as e:  # a temporary file shared by two writers is renamed away under one of them
            errors.append(e)

    threads = [threading.Thread(target=write, args=(c,)) for c in contents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert path.read_bytes() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary file left behind
