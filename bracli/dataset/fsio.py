"""Reading files a stranger made without hanging, exhausting memory or following loops.

A dataset is data from anywhere: a FIFO named ``x.jpg`` blocks a plain ``open`` forever, a device never
ends, a symlink can point back at its own folder. Files are therefore opened non-blocking and checked to be
regular before a byte is read, reads are capped, and folders are walked once per real folder.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)


class NotRegularFile(OSError):
    """The path exists but is a folder, FIFO, socket or device: reading it could block or never end."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"is {kind}, not a regular file")
        self.kind = kind


class FileTooLarge(OSError):
    """The file is larger than the caller is willing to read into memory."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def kind_of(mode: int) -> str:
    """What a non-regular file is, in words."""
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def read_regular(path: str, limit: int | None = None) -> tuple[bytes | None, os.stat_result]:
    """The whole file and its ``fstat``; ``None`` instead of the bytes when it is over ``limit``.

    Raises ``NotRegularFile`` (checked on the open descriptor, so a file swapped after an earlier ``stat``
    is caught too) and the usual ``OSError``s.
    """
    fd = os.open(path, OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(kind_of(info.st_mode))
        if limit is not None and info.st_size > limit:
            return None, info
        chunks, remaining = [], (limit if limit is not None else info.st_size) + 1
        while remaining > 0:  # read to the end, even if the file grew since fstat, but never past the limit
            chunk = os.read(fd, max(min(remaining, 1 << 24), 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if limit is not None and len(data) > limit:
            return None, info
        return data, info
    finally:
        os.close(fd)


def open_regular(path: str):
    """A binary file object for a regular file (for streaming reads of files too large to hold)."""
    fd = os.open(path, OPEN_FLAGS)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(kind_of(info.st_mode))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@dataclass
class Walk:
    """Files found under a folder, and the folder links that were not followed (and why)."""

    files: list[str] = field(default_factory=list)
    loops: list[tuple[str, str]] = field(default_factory=list)  # (link, the folder it leads back to)
    repeats: list[tuple[str, str]] = field(default_factory=list)  # (link, the folder already walked)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (folder, reason)


def walk(folder: str, wanted) -> Walk:
    """Every ``wanted(name)`` entry below ``folder``, as ``glob('**/*')`` lists them, each real folder once.

    Like glob: names starting with a dot are skipped, links to folders are followed, and entries of any
    type (folders, FIFOs) whose name is wanted are listed. Unlike glob, a folder reached a second time
    through a link is not walked again but reported: as a loop when it is one of the path's own parents,
    else as a second way into the same files. Real folders are walked before links, entries in name
    order, so which path counts as the first is stable.
    """
    found = Walk()
    try:
        top = os.stat(folder)
    except OSError as e:
        found.unreadable.append((folder, e.strerror or str(e)))
        return found
    seen = {(top.st_dev, top.st_ino): folder}
    folders: list[tuple[str, bool]] = [(folder, False)]  # (path, reached through a link)
    links: list[tuple[str, tuple[int, int]]] = []
    while folders or links:
        if not folders:  # the real tree is done: enter the next link
            link, key = links.pop(0)
            if _again(found, seen, key, link):
                continue
            seen[key] = link
            folders.append((link, True))
            continue
        path, linked = folders.pop()
        try:
            with os.scandir(path) as entries:
                listed = sorted(entries, key=lambda e: e.name)
        except OSError as e:
            found.unreadable.append((path, e.strerror or str(e)))
            continue
        subfolders = []
        for entry in listed:
            name = entry.name
            if name.startswith("."):
                continue
            if wanted(name):
                found.files.append(entry.path)
            try:
                if not entry.is_dir():
                    continue
                info = entry.stat()
                is_link = entry.is_symlink()
            except OSError:  # a dangling or looping link: not a folder to walk
                continue
            key = (info.st_dev, info.st_ino)
            if is_link:
                links.append((entry.path, key))
            elif key in seen:  # a bind mount shows a folder twice (quietly skipped); below a link, a loop
                if linked:
                    _again(found, seen, key, entry.path)
            else:
                seen[key] = entry.path
                subfolders.append((entry.path, linked))
        folders.extend(reversed(subfolders))  # depth first, in name order
    return found


def _again(found: Walk, seen: dict, key: tuple[int, int], path: str) -> bool:
    """Record ``path`` as a loop or a repeat if its folder was walked already."""
    if key not in seen:
        return False
    target = seen[key]
    (found.loops if path.startswith(target.rstrip(os.sep) + os.sep) else found.repeats).append((path, target))
    return True
