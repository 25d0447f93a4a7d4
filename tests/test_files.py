"""Atomic writes: never half a file, never over an existing one without force, usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from bracli.errors import OutputExistsError, UsageError
from bracli.files import atomic_write_text, check_writable


def test_written_file_has_the_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temp file left


def test_never_overwrites_without_force(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("keep")
    with pytest.raises(OutputExistsError):
        atomic_write_text(path, "new")
    assert path.read_text() == "keep"
    atomic_write_text(path, "new", force=True)
    assert path.read_text() == "new"


def test_a_folder_is_not_a_file_target(tmp_path):
    with pytest.raises(UsageError, match="is a directory"):
        check_writable(tmp_path, force=True)
