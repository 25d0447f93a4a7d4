"""Files that never lose what the user had: refuse to overwrite unless forced, write atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bracli.errors import OutputExistsError, UsageError


def check_writable(path: Path, force: bool) -> None:
    """Fail before any work is done when ``path`` cannot be written: it exists (without ``force``), a folder is in
    its way, or no file can be made where it goes."""
    if path.exists() and not force:
        raise OutputExistsError(path)
    refuse_directory(path)
    probe_writable(path)


def probe_writable(path: Path) -> None:
    """Fail when no file can be made where ``path`` goes. ``os.access`` says yes to root on a read-only mount or
    under /proc; creating and removing a file in the nearest existing folder is the real test."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: {folder} is not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".bra-probe-", dir=folder)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from e
    os.close(handle)
    os.unlink(probe)


def refuse_directory(path: Path) -> None:
    """A folder where a file should go is the user's data: never replaced, not even with ``--force``."""
    if path.is_dir():
        raise UsageError(f"{path} is a directory, expected a file path")


def atomic_write_bytes(path: str | Path, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` via a temp file and rename, so a crash never leaves half a file."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(path)
    refuse_directory(path)
    try:  # the temp file is the probe: a folder that takes no file fails here
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
