"""`bracli.formats`: ultralytics' own image and video extension lists, read without importing ultralytics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bracli import formats


def test_the_lists_are_ultralytics_own():
    from ultralytics.data.utils import IMG_FORMATS, VID_FORMATS  # after the set-up tests/conftest.py runs

    assert formats.IMAGE_EXTENSIONS == frozenset(IMG_FORMATS) == formats.image_extensions()
    assert formats.VIDEO_EXTENSIONS == frozenset(VID_FORMATS) == formats.video_extensions()
    assert all(ext == ext.lower() and not ext.startswith(".") for ext in formats.IMAGE_EXTENSIONS)


def test_reading_them_imports_neither_ultralytics_nor_torch():
    code = ("import sys; from bracli.formats import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS; "
            "assert 'jpg' in IMAGE_EXTENSIONS and 'mp4' in VIDEO_EXTENSIONS; "
            "print(sorted(m for m in ('torch', 'ultralytics') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_dataset_check_imports_neither_ultralytics_nor_torch(tmp_path):
    """Worker processes fork from the checking process: nothing heavy may be in it."""
    code = ("import sys; sys.path.insert(0, sys.argv[2]); from conftest import clean_dataset; "
            "from pathlib import Path; from bracli.dataset.check import check; "
            "r = check(clean_dataset(Path(sys.argv[1])), cache=False); assert r.exit_code == 0; "
            "print(sorted(m for m in ('torch', 'ultralytics') if m in sys.modules))")
    folder = str(Path(__file__).parent)
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path), folder], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_other_ways_to_read_the_source_give_the_same_lists(monkeypatch):
    source = formats._ultralytics_source()
    names = ("IMG_FORMATS", "VID_FORMATS")
    expected = formats._literal_sets(source, names)
    assert formats._literal_sets_from_module(source, names) == expected
    # an assignment that is not a plain literal is never half-read: the slow path (import) takes over
    assert formats._literal_sets('IMG_FORMATS = {"a", "b"} | {"c"}\nVID_FORMATS = {"mp4"}\n', names) is None
    monkeypatch.setattr(formats, "_ultralytics_source", lambda: None)
    formats._formats.cache_clear()
    try:
        assert formats.image_extensions() == frozenset(expected["IMG_FORMATS"])
    finally:
        formats._formats.cache_clear()
