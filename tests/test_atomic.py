"""The one output writer: atomic replacement, umask permissions, one-line errors that name the path."""

import errno
import os
import stat

import pytest

from adaptertune.atomic import (
    atomic_write_bytes,
    atomic_write_stream,
    atomic_write_text,
    check_output_dir,
    ensure_output_dir,
    file_mode,
)
from adaptertune.errors import OutputError
from helpers import no_space_left


@pytest.fixture
def umask():
    old = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_umask_mode(tmp_path, umask, mask, expected):
    umask(mask)
    assert file_mode() == expected
    atomic_write_text(tmp_path / "new.json", "{}")
    assert _mode(tmp_path / "new.json") == expected
    (tmp_path / "old.txt").write_text("x")
    os.chmod(tmp_path / "old.txt", 0o600)
    atomic_write_text(tmp_path / "old.txt", "y")  # a replaced file gets the umask mode too
    assert _mode(tmp_path / "old.txt") == expected


def test_parent_folders_are_created(tmp_path):
    atomic_write_bytes(tmp_path / "a" / "b" / "c.bin", b"123")
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"123"


def test_a_failing_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old results\n")

    def disk_full(f):
        f.write(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError) as e:
        atomic_write_stream(target, disk_full)
    msg = str(e.value)
    assert "\n" not in msg and str(target) in msg and "No space left" in msg and "intact" in msg
    assert target.read_text() == "old results\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]  # no temporary file left


def test_a_failing_first_write_leaves_nothing(tmp_path):
    def fail(f):
        raise OSError(errno.EROFS, "Read-only file system")

    with pytest.raises(OutputError, match="Read-only file system; nothing was written"):
        atomic_write_stream(tmp_path / "x.png", fail)
    assert list(tmp_path.iterdir()) == []


def test_other_exceptions_pass_through_and_clean_up(tmp_path):
    def boom(f):
        raise KeyError("not an OS error")

    with pytest.raises(KeyError):
        atomic_write_stream(tmp_path / "x", boom)
    assert list(tmp_path.iterdir()) == []


def test_target_is_a_folder(tmp_path):
    (tmp_path / "report.html").mkdir()
    with pytest.raises(OutputError, match=r"report.html': it is a folder; give a file name"):
        atomic_write_text(tmp_path / "report.html", "<html>")


def test_parent_is_a_file(tmp_path):
    (tmp_path / "a_file").write_text("x")
    for call in (
        lambda: atomic_write_text(tmp_path / "a_file" / "sub" / "out.json", "{}"),
        lambda: ensure_output_dir(tmp_path / "a_file" / "sub"),
        lambda: check_output_dir(tmp_path / "a_file" / "sub"),
    ):
        with pytest.raises(OutputError, match=r"a_file' is a file, not a folder") as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(OutputError, match="exists and is not a folder"):
        ensure_output_dir(tmp_path / "a_file")
    assert (tmp_path / "a_file").read_text() == "x"


def test_check_output_dir_creates_nothing(tmp_path):
    check_output_dir(tmp_path / "later" / "runs")
    assert not (tmp_path / "later").exists()


def test_output_error_is_an_os_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "f" / "g", "y")


def test_atomic_write_keeps_old_file_on_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write_text(target, '{"old": 1}')
    monkeypatch.setattr(os, "fsync", no_space_left)
    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write_text(target, '{"new": 2}')
    assert target.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left behind


def test_atomic_write_into_missing_or_file_parent(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="Cannot write"):
        atomic_write_text(tmp_path / "f" / "summary.json", "{}")
