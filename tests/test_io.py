import os

import pytest

from growth_core.io import atomic_write, write_json


def test_atomic_write_replaces_whole_files_with_normal_permissions(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"a": 1})
    assert path.read_text().strip().startswith("{")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(path, fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["t.txt"]


def test_the_file_and_its_rename_reach_the_disk_before_it_counts(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = write_json(tmp_path / "r.json", {"a": 1})
    assert len(synced) == 2
    assert synced[0].startswith(str(tmp_path / ".r.json.")) and synced[1] == str(tmp_path)
    assert path.exists()
