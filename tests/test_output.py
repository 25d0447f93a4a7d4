"""`Output`: a --json target that cannot be written is refused when the command starts, not after its work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bracli.errors import UsageError
from bracli.files import probe_writable
from bracli.output import Output

PROC = Path("/proc/self")  # no file can be created under /proc, not even by root


@pytest.mark.skipif(not PROC.is_dir(), reason="needs Linux /proc")
def test_a_folder_nobody_can_write_is_refused_even_for_root():
    with pytest.raises(UsageError, match=r"cannot write /proc/x\.json"):
        Output("/proc/x.json")


def test_a_parent_that_is_a_file_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot write"):
        Output(str(blocker / "deeper" / "x.json"))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(UsageError, match="cannot write"):
            Output(str(folder / "x.json"))
    finally:
        folder.chmod(0o700)


def test_the_probe_leaves_nothing_behind(tmp_path):
    probe_writable(tmp_path / "not" / "yet" / "x.json")
    Output(str(tmp_path / "x.json"))
    assert list(tmp_path.iterdir()) == []
