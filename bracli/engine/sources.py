"""What `bra predict` reads and where it may show it: sources resolved and checked, displays probed.

Sources are checked before the model runs: a missing file, a glob matching nothing, a download, or an
image that cannot be decoded is one line, not an empty table. A window is opened only when a display
really answers: a ``DISPLAY`` that points at nothing makes Qt abort the whole process, so it is probed
first (the socket, then a window in a child process).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ultralytics.utils import ASSETS

from bracli.errors import BracliError, UsageError
from bracli.formats import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

LIST_SUFFIXES = {"txt", "csv"}  # ultralytics reads these as lists of sources
STREAM_PREFIXES = ("rtsp://", "rtmp://", "tcp://")
PROBE_SECONDS = 10  # a window that has not opened by then will not


@dataclass
class Source:
    """A resolved source: what ultralytics is given, and the image files among it (checked one by one)."""

    value: str | int | list[str]
    images: list[str]

    @property
    def only_images(self) -> bool:
        """Every file of the source is one of ``images`` (so it can be given as that list instead)."""
        if isinstance(self.value, list):
            return len(self.value) == len(self.images)
        if not isinstance(self.value, str):
            return False
        if Path(self.value).is_dir():
            return not any(_extension(p) in VIDEO_EXTENSIONS for p in Path(self.value).iterdir())
        return self.value in self.images


def resolve_source(source: str | None) -> Source:
    """An image, folder, glob (expanded here), video, list file, camera index or stream URL.

    Refuses downloads and missing files."""
    if source is None:
        return Source(str(ASSETS), _images_in(ASSETS))
    text = str(source).strip()
    if text.isdigit():
        return Source(int(text), [])
    lowered = text.lower()
    if lowered.startswith(STREAM_PREFIXES):
        return Source(text, [])
    if lowered.startswith(("http://", "https://")):
        raise UsageError("bracli does not download sources; save the file locally and pass its path")
    media = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    if any(ch in text for ch in "*?["):
        matches = sorted(str(Path(p).resolve()) for p in glob.glob(os.path.expanduser(text), recursive=True)
                         if Path(p).is_file() and _extension(p) in media)
        if not matches:
            raise BracliError(f"no images or videos match {text}")
        return Source(matches, [m for m in matches if _extension(m) in IMAGE_EXTENSIONS])
    path = Path(text).expanduser()
    if not path.exists():
        raise BracliError(f"source not found: {path}")
    if path.is_file() and _extension(path) not in media | LIST_SUFFIXES:
        raise UsageError(f"{path.name}: unsupported file type; images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or "
                         f"videos ({', '.join(sorted(VIDEO_EXTENSIONS))})")
    if path.is_dir():
        images = _images_in(path)
        if not images and not any(_extension(p) in VIDEO_EXTENSIONS for p in path.iterdir()):
            raise BracliError(f"{path} holds no images or videos")
        return Source(str(path.resolve()), images)
    if not path.is_file():
        raise UsageError(f"{path} is not a regular file")
    if _extension(path) in LIST_SUFFIXES and not _lists_anything(path):
        raise BracliError(f"{path} lists no image or video paths (one per line)")
    return Source(str(path.resolve()), [str(path.resolve())] if _extension(path) in IMAGE_EXTENSIONS else [])


def _lists_anything(list_file: Path) -> bool:
    """Whether a list file has a line that is not blank (read up to the first one)."""
    with open(list_file, "rb") as f:
        return any(line.strip() for line in f)


def _extension(path: str | Path) -> str:
    return Path(path).suffix.lower().lstrip(".")


def _images_in(folder: Path) -> list[str]:
    return sorted(str(p.resolve()) for p in Path(folder).iterdir() if p.is_file() and _extension(p) in IMAGE_EXTENSIONS)


def unreadable_images(images: list[str]) -> dict[str, str]:
    """Image → why decoding would fail (empty, not an image, cut short), from the header and the bytes.

    ultralytics wraps PIL's ``Image.open`` to offer installing a HEIF plugin for files it cannot identify;
    its log is held back here, since the reason is reported per image.
    """
    from bracli.dataset.probe import inspect_image

    fatal = {"image.missing", "image.corrupt", "image.truncated", "image.unsupported_format", "image.tiny"}
    bad = {}
    library_log = logging.getLogger("ultralytics")
    level = library_log.level
    library_log.setLevel(logging.ERROR)
    try:
        for image in images:
            facts = inspect_image(image, perceptual=False)
            problem = next((p for p in facts.problems if p[0] in fatal), None)
            if problem is not None:  # the dataset check's wording, less what training would do about it
                bad[image] = re.split(r"; (?:training|ultralytics) ", problem[2])[0]
    finally:
        library_log.setLevel(level)
    return bad


def display_available() -> tuple[bool, str]:
    """Whether a window can open: a display that answers, and an OpenCV built with a GUI backend."""
    if sys.platform.startswith("linux"):
        display, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
        if not (display or wayland):
            return False, "no display (DISPLAY/WAYLAND_DISPLAY unset)"
        if display and not _x_display_answers(display):
            return False, f"DISPLAY={display} does not answer"
    import cv2

    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui and gui.group(1).upper() == "NONE":
        return False, "OpenCV was built without a GUI backend"
    if not _window_opens():
        return False, "a test window could not be opened on this display"
    return True, ""


def _x_display_answers(display: str) -> bool:
    """Connect to the X server's socket named by DISPLAY ([host]:number[.screen])."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if not number.isdigit():
        return False
    if host in ("", "unix"):
        for address in (f"\0/tmp/.X11-unix/X{number}", f"/tmp/.X11-unix/X{number}"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(1.0)
                try:
                    probe.connect(address)
                    return True
                except OSError:
                    continue
        return False
    try:
        with socket.create_connection((host, 6000 + int(number)), timeout=1.0):
            return True
    except OSError:
        return False


def _window_opens() -> bool:
    """Open and close a window in a child process: a GUI toolkit that aborts takes only the child down."""
    code = ("import cv2, numpy; cv2.imshow('bra', numpy.zeros((8, 8, 3), 'uint8')); cv2.waitKey(1); "
            "cv2.destroyAllWindows()")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=PROBE_SECONDS)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0
