"""Files that never lose what the user had: refuse to overwrite unless forced, write atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bracli.errors import OutputExistsError, UsageError


def check_writable(path: Path, force: bool) -> None:
    """Fail before any work is done when ``path`` cannot be written (exists, or folder not creatable)."""
    if path.exists() and not force:
        raise OutputExistsError(path)
    refuse_directory(path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {path}: {parent} is not a writable directory")


def refuse_directory(path: Path) -> None:
    """A folder where a file should go is the user's data: never replaced, not even with ``--force``."""
    if path.is_dir():
        raise UsageError(f"{path} is a directory, expected a file path")


def atomic_write_bytes(path: str | Path, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` via a temp file and rename, so a crash never leaves half a file."""
    path = Path(path)
    check_writable(path, force)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual permissions
        if not force and path.exists():  # appeared while we were writing
            raise OutputExistsError(path)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str, force: bool = False) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), force=force)
