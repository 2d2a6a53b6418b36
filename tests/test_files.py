"""write_text_atomic: the target is whole before and after, and no temporary file is left."""

from __future__ import annotations

import pytest

from cxr.files import write_text_atomic


def test_writes_and_replaces_whole_files(tmp_path):
    path = write_text_atomic(tmp_path / "a.json", "one")
    assert path.read_text() == "one"
    write_text_atomic(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = write_text_atomic(tmp_path / "a.json", "old")

    def full_disk(self, text):
        with open(self, "w") as file:
            file.write(text[:1])  # half written, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(path), "write_text", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_text_atomic(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]
