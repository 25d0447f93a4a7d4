"""Per-file results of `bra dataset check`, kept between runs in bracli's cache folder, never in the dataset.

One JSON file per data.yaml (``cache_root()/dataset-check/<hash of its path>.json``). Each image path
maps to the ``stat_key`` (size, mtime and ctime in ns, inode) of the image and of its label file, the
parameters the label was checked with (class count, image size, task), and both results as plain
records. An entry serves a run only when the keys still match; the image and its label are judged
apart, so editing a label re-reads only the label. The ctime catches a same-size edit even when a
tool restores the mtime (ultralytics' own cache, keyed on paths and total size, misses both).

What a key cannot catch is an edit within the filesystem's timestamp granularity of the moment the
file was read (FAT has 2 s). Results for files changed less than ``RACY_SECONDS`` before the check
started are therefore not stored: they are read again next time.

The file is data, never code (JSON, not pickle), and anything unexpected in it — a truncated or foreign
file, a record of the wrong shape, an unknown check id — makes the entry (or the whole file) count as
absent. Writing is atomic (temp file, rename), so two checks at once each leave a whole file; a folder
that cannot be written is skipped. None of this raises: the cache can only make a check faster. Files of
datasets not checked for ``UNUSED_DAYS`` are deleted when another check saves.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from bracli.dataset.fsio import read_regular
from bracli.dataset.probe import DIGEST_FIELD
from bracli.paths import cache_root

FORMAT = "bracli.dataset-check"
VERSION = 1  # bump when a per-file check changes what it reports
RACY_SECONDS = 2.0
UNUSED_DAYS = 30  # cache files of datasets not checked for this long are deleted
BYTES_PER_IMAGE = 16 << 10  # the most a cache file may hold per listed image (more is not ours)


class ResultCache:
    """Entries read from one cache file, and the entries to write back after the check."""

    def __init__(self, path: Path | None, context: dict[str, Any], started_ns: int) -> None:
        self.path = path
        self.context = context
        self.entries: dict[str, list] = {}
        self.kept: dict[str, list] = {}
        self.changed = False
        self.status = "off" if path is None else "empty"
        self.hits = 0
        self.settled_before = started_ns - int(RACY_SECONDS * 1e9)  # files changed since then are not stored

    @classmethod
    def open(cls, data_yaml: Path, context: dict[str, Any], images: int, enabled: bool = True) -> ResultCache:
        """The cache for ``data_yaml`` (disabled: one that holds and keeps nothing)."""
        started = time.time_ns()
        if not enabled:
            return cls(None, context, started)
        digest = hashlib.sha256(os.fsencode(str(data_yaml))).hexdigest()[:24]
        cache = cls(cache_root() / "dataset-check" / f"{digest}.json", context, started)
        cache._load(max(64 << 20, BYTES_PER_IMAGE * images))
        return cache

    def _load(self, limit: int) -> None:
        try:
            data, _ = read_regular(str(self.path), limit)
            stored = json.loads(data) if data is not None else None
        except FileNotFoundError:
            return
        except (OSError, ValueError, RecursionError, MemoryError):
            stored = None
        if not (isinstance(stored, dict) and stored.get("format") == FORMAT and stored.get("version") == VERSION
                and stored.get("context") == self.context and isinstance(stored.get("entries"), dict)):
            self.status = "ignored (unreadable, foreign or from another version)"
            self.changed = True  # replace it with a good one
            return
        self.entries = stored["entries"]
        self.status = "used"

    def lookup(self, image: str) -> list | None:
        """The stored entry of ``image``: [image key, image record, label key, label params, label record]."""
        entry = self.entries.get(image)
        return entry if isinstance(entry, list) and len(entry) == 5 else None

    def keep(self, image: str, entry: list) -> None:
        """Carry a served entry over to the file written next."""
        self.kept[image] = entry
        self.hits += 1

    def put(self, image: str, image_key, image_record: list | None, label_key, label_params: list,
            label_record: list) -> None:
        """Store fresh results, leaving out any half whose file changed too recently to be trusted."""
        if self.path is None:
            return
        if image_key is None or self._racy(image_key):
            image_key = image_record = None
        if label_key is None or self._racy(label_key):
            label_key = label_record = None
        if image_record is not None or label_record is not None:
            self.kept[image] = [image_key, image_record, label_key, label_params, label_record]
        self.changed = True

    def add_digest(self, image: str, key: list[int], digest: bytes) -> None:
        """Add a file's full SHA-1 to its stored record, if the record is of the bytes that were hashed."""
        entry = self.kept.get(image)
        if entry is not None and entry[1] is not None and entry[0] == key:
            record = list(entry[1])
            record[DIGEST_FIELD] = digest.hex()
            entry[1] = record
            self.changed = True

    def _racy(self, key) -> bool:
        """Changed so recently that a later edit could leave the same key (timestamp granularity)."""
        if not isinstance(key, list):
            return False  # "missing": a file that appears later changes the key
        return key[1] >= self.settled_before or key[2] >= self.settled_before

    def save(self) -> None:
        """Write the kept entries atomically; on any failure keep quiet (the check has its results)."""
        if self.path is None or not (self.changed or self.kept.keys() != self.entries.keys()):
            return
        payload = {"format": FORMAT, "version": VERSION, "context": self.context, "entries": self.kept}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as e:
            self.status = f"not saved ({e.strerror or e})"
            return
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(payload, separators=(",", ":")))  # one C call, not many small writes
            os.replace(temp, self.path)
        except OSError as e:
            self.status = f"not saved ({e.strerror or e})"
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        _prune(self.path.parent)

    def summary(self) -> dict[str, Any]:
        return {"file": str(self.path) if self.path else None, "status": self.status, "hits": self.hits}


def _prune(folder: Path) -> None:
    """Delete this folder's cache files that no check has written for ``UNUSED_DAYS`` (and stale temp files)."""
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        ours = re.fullmatch(r"[0-9a-f]{24}\.json", name) or re.fullmatch(r"\.[0-9a-f]{24}\.json\..+\.tmp", name)
        try:
            limit = UNUSED_DAYS * 86400 if not name.startswith(".") else 86400
            if ours and entry.is_file(follow_symlinks=False) and now - entry.stat().st_mtime > limit:
                os.unlink(entry.path)
        except OSError:
            continue
