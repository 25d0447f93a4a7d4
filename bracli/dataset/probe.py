"""Per-file checks of an image: pure functions from one image file to facts and problems.

These run in worker processes, so they import only PIL and numpy, read each file at most once, and
return plain records (lists of numbers and strings: picklable, and JSON for the cache). Format, size,
mode and EXIF come from the header without decoding pixels; without the perceptual hash only the
header and the two ends of a file are read. Truncation is
found from the bytes themselves (a JPEG whose last scan has no end-of-image marker after it, a PNG
without its IEND chunk), so it costs no decode either. Pixels are decoded only for the perceptual hash,
and then at reduced size (JPEG DCT scaling via ``draft``); that decode also catches data that breaks the
decoder. Exact duplicates need a hash of all the bytes, but only files that agree on size and on a
``fingerprint`` of their first and last 4 KiB can be identical; the caller asks for the full SHA-1
(``file_digest``) of those alone, which for most datasets is none.

(About 380 lines, on purpose: the header checks, the ending checks and the hash share one read of each file
and one record layout, which the cache stores.)

A path that is not a regular file is reported from its ``stat`` without being opened (a FIFO would block
forever, a device never ends).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass, field

import numpy as np

from bracli.dataset import fsio
from bracli.dataset.fsio import NotRegularFile, kind_of, open_regular, read_regular
from bracli.dataset.labels import LabelFacts, Problem, inspect_label, problems_from_record, stat_key
from bracli.formats import image_extensions

EXIF_ORIENTATION = 274
MIN_SIDE = 10  # ultralytics drops images with a side under 10 px
MAX_IMAGE_BYTES = 256 << 20  # larger files are streamed (header, tail, digest) and get no perceptual hash
EDGE_BYTES = 4096  # the fingerprint hashes this much of each end of a file
PREFETCH = 8  # files read ahead of the one being checked (when the page cache is cold)
DIGEST_FIELD = 7  # where ``ImageFacts.to_record`` puts the SHA-1 (hex), which may be added later
THUMB_SIDE = 32
HASH_SIDE = 9  # 9×9 thumbnail → 8×8 horizontal + 8×8 vertical gradient bits = 128-bit hash
GREY_MODES = frozenset({"1", "L", "I", "I;16", "I;16B", "I;16L", "F"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
ORIENTATION_NAMES = {2: "mirrored", 3: "rotated 180°", 4: "flipped", 5: "mirrored and rotated 90°",
                     6: "rotated 90°", 7: "mirrored and rotated 270°", 8: "rotated 270°"}


@functools.cache
def supported_formats() -> frozenset[str]:
    """PIL format names training accepts: ultralytics' check is ``format in IMG_FORMATS | {"jpeg2000"}``."""
    return image_extensions() | {"jpeg2000"}


@dataclass
class ImageFacts:
    """What one image file is, as training would see it (size after EXIF rotation)."""

    path: str
    found: bool = True
    usable: bool = False
    format: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    file_size: int = 0
    fingerprint: bytes = b""  # SHA-1 of the size and both ends: equal for identical files
    digest: bytes = b""  # SHA-1 of the bytes, when it was asked for
    dhash: tuple[int, int] | None = None
    hashed: bool = False  # the perceptual hash was attempted (it fails on undecodable pixels)
    decode_problem: Problem | None = None  # what the pixel decode found, if anything
    problems: list[Problem] = field(default_factory=list)  # everything, decode problem included
    key: list[int] | None = field(default=None, compare=False)  # ``stat_key`` of what was read

    def to_record(self) -> list:
        """Plain data (for the cache and for sending between processes); the digest is at ``DIGEST_FIELD``."""
        header = [list(p) for p in self.problems if p is not self.decode_problem]
        return [self.found, self.usable or self.decode_problem is not None, self.format, self.width, self.height,
                self.mode, self.file_size, self.digest.hex() or None, self.hashed,
                list(self.dhash) if self.dhash else None, list(self.decode_problem) if self.decode_problem else None,
                header, self.fingerprint.hex() or None]

    @classmethod
    def from_record(cls, path: str, record: list, perceptual: bool, known_checks) -> ImageFacts:
        """The inverse of ``to_record``, as a run with or without the perceptual hash would have found it.

        Raises ``ValueError`` (or ``TypeError``) on anything malformed.
        """
        found, usable, fmt, width, height, mode, size, digest, hashed, dhash, decode, problems, fingerprint = record
        if {type(found), type(usable), type(hashed)} != {bool} or type(fmt) is not str or type(mode) is not str \
                or {type(width), type(height), type(size)} != {int} or min(width, height, size) < 0:
            raise ValueError("malformed image record")
        facts = cls(path, found, usable, fmt, width, height, mode, size, _bytes(fingerprint), _bytes(digest),
                    problems=problems_from_record(problems, known_checks) if problems else [])
        if perceptual and hashed:
            facts.hashed = True
            if dhash is not None:
                high, low = dhash
                if not all(isinstance(v, int) and 0 <= v < 1 << 64 for v in (high, low)):
                    raise ValueError("malformed hash")
                facts.dhash = (high, low)
            if decode is not None:
                facts.decode_problem = problems_from_record([decode], known_checks)[0]
                facts.problems.append(facts.decode_problem)
                facts.usable = False
        return facts


def _bytes(text: str | None) -> bytes:
    if text is not None and not isinstance(text, str):
        raise ValueError("malformed hex")
    return bytes.fromhex(text) if text else b""


def probe_chunk(tasks: list[tuple], nc: int | None, perceptual: bool, task: str) -> list[tuple]:
    """Inspect a list of (image, label file, known image size or None) → records.

    The unit of work sent to a worker process. Returns, per task, ``(image record or None, image key,
    label record, label key)``; a known image size means the image's record is cached already and only
    the label is read. Keys are ``stat_key``s of what was read (None: not worth caching).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PIL warns on odd EXIF and huge images; the checks report what matters
        results = []
        for index, (image_path, label_file, known) in enumerate(tasks):
            if index % PREFETCH == 0:  # while these files are checked, the disk can read the next ones
                ahead = tasks[index + (PREFETCH if index else 0):index + 2 * PREFETCH]
                paths = [path for image, label, cached in ahead for path in ((label,) if cached else (image, label))]
                if paths and prefetch(paths[-1]):
                    for path in paths[:-1]:
                        prefetch(path)
            image_key = None
            if known is None:
                image = inspect_image(image_path, perceptual, need_digest=False)
                found, width, height, image_key = image.found, image.width, image.height, image.key
            else:
                image, (found, width, height) = None, known
            label = inspect_label(label_file, nc, width, height, task) if found else LabelFacts(label_file)
            results.append((image.to_record() if image else None, image_key, label.to_record(), label.key))
        return results


def prefetch(path: str) -> bool:
    """Ask the kernel to read a file into the page cache in the background, if it is not there already.

    Returns whether it had to (a hint: errors, and platforms without the calls, give False). A warm
    cache costs an open and one non-blocking read of a byte; a cold one is read while other files are
    being checked instead of when this one is.
    """
    if not hasattr(os, "posix_fadvise"):
        return False
    try:
        fd = os.open(path, fsio.OPEN_FLAGS)
    except (OSError, ValueError):
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or _in_page_cache(fd):
            return False
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _in_page_cache(fd: int) -> bool:
    """Whether the first byte of an open file can be read without waiting for the disk."""
    if not hasattr(os, "RWF_NOWAIT"):
        return False
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    except OSError:  # a filesystem without the flag: cannot tell, so ask for the read ahead
        return False
    return True


def inspect_image(path: str, perceptual: bool = True, need_digest: bool = True,
                  info: os.stat_result | None = None) -> ImageFacts:
    """Header, integrity and (optionally) a perceptual hash and SHA-1 of one image file.

    The whole file is read only when the hash or the digest needs every byte; otherwise the header
    (as PIL asks for it) and both ends are enough. ``info`` is the file's ``stat`` when the caller has
    it: a non-regular file is then reported unopened.
    """
    facts = ImageFacts(path)
    if info is not None and not stat.S_ISREG(info.st_mode):
        return _not_a_file(facts, kind_of(info.st_mode))
    whole = perceptual or need_digest
    try:
        if whole:
            data, info = read_regular(path, MAX_IMAGE_BYTES)
            if data is not None:
                return _inspect_bytes(facts, data, info, perceptual, need_digest)
        facts.hashed = whole  # too large to hold: no perceptual hash, and that is settled
        with open_regular(path) as f:
            return _inspect_stream(facts, f, need_digest)
    except FileNotFoundError:
        facts.problems.append(("image.missing", None, "listed in the split but the file does not exist", 0.0))
        facts.found = False
    except NotRegularFile as e:
        _not_a_file(facts, e.kind)
    except OSError as e:
        facts.problems.append(("image.corrupt", None, f"cannot be read: {e.strerror or e}", 0.0))
    return facts


def _inspect_bytes(facts: ImageFacts, data: bytes, info: os.stat_result, perceptual: bool,
                   need_digest: bool) -> ImageFacts:
    facts.key, facts.file_size = stat_key(info), len(data)
    facts.fingerprint = _fingerprint(len(data), data[:EDGE_BYTES], data[-EDGE_BYTES:])
    if need_digest:
        facts.digest = hashlib.sha1(data, usedforsecurity=False).digest()  # identity, not security: fastest here
    image = _open(facts, io.BytesIO(data))
    if image is None:
        return facts
    _check_ending(facts, data[-16:], data.rfind)
    if perceptual and facts.usable:
        facts.hashed = True
        try:
            facts.dhash = _dhash(image, facts.format)
        except Exception as e:
            truncated = "truncated" in str(e)
            facts.decode_problem = ("image.truncated" if truncated else "image.corrupt", None,
                                    f"pixel data cannot be decoded ({e}); training drops or damages it", 0.0)
            facts.problems.append(facts.decode_problem)
            facts.usable = False
    return facts


def _inspect_stream(facts: ImageFacts, f, need_digest: bool) -> ImageFacts:
    """The same checks from the header and the ends of an open file (and a digest read in pieces)."""
    info = os.fstat(f.fileno())
    facts.key, facts.file_size = stat_key(info), info.st_size
    head = f.read(EDGE_BYTES)
    f.seek(max(0, info.st_size - EDGE_BYTES))
    tail = f.read(EDGE_BYTES)
    facts.fingerprint = _fingerprint(info.st_size, head, tail)
    if need_digest:
        f.seek(0)
        facts.digest = _sha1(f)
    f.seek(0)
    if _open(facts, f) is not None:
        _check_ending(facts, tail, lambda marker: _find_last(f, marker))
    return facts


def _not_a_file(facts: ImageFacts, kind: str) -> ImageFacts:
    facts.found = False  # its label is moot: this is the error to fix
    hang = " (opening a FIFO blocks forever)" if "FIFO" in kind else ""
    facts.problems.append(("image.not_a_file", None, f"is {kind}, not an image file: training would try to open it"
                           f"{hang}; remove it from the split", 0.0))
    return facts


def _fingerprint(size: int, head: bytes, tail: bytes) -> bytes:
    return hashlib.sha1(b"%d:%b:%b" % (size, head, tail), usedforsecurity=False).digest()


def _sha1(f) -> bytes:
    digest = hashlib.sha1(usedforsecurity=False)
    while chunk := f.read(1 << 24):
        digest.update(chunk)
    return digest.digest()


def file_digest(path: str) -> tuple[bytes, list[int]]:
    """SHA-1 of a whole file (read in pieces) and the ``stat_key`` of what was hashed."""
    with open_regular(path) as f:
        return _sha1(f), stat_key(os.fstat(f.fileno()))


def _find_last(f, marker: bytes) -> int:
    """Position of the last ``marker`` in an open file, reading it in pieces; -1 if there is none."""
    f.seek(0)
    last, offset, carry = -1, 0, b""
    while chunk := f.read(1 << 24):
        window = carry + chunk
        found = window.rfind(marker)
        if found >= 0:
            last = offset - len(carry) + found
        carry = window[-(len(marker) - 1):]
        offset += len(chunk)
    return last


def _open(facts: ImageFacts, source):
    """Open the image lazily (header only) and record what the header says; None if it cannot be opened."""
    from PIL import Image, UnidentifiedImageError

    problems = facts.problems
    try:
        image = Image.open(source)
    except (UnidentifiedImageError, ImportError):  # ImportError: a registered decoder plugin is not installed
        problems.append(("image.corrupt", None, "not an image file any installed decoder recognises; "
                         "training drops it", 0.0))
        return None
    except Exception as e:  # PIL raises many types on hostile headers
        problems.append(("image.corrupt", None, f"cannot be opened ({type(e).__name__}: {e}); training drops it",
                         0.0))
        return None
    facts.format = (image.format or "").lower()
    facts.mode = image.mode
    width, height = image.size
    orientation = _orientation(image)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    facts.width, facts.height = width, height
    facts.usable = True
    if facts.format not in supported_formats():
        problems.append(("image.unsupported_format", None, f"{image.format} data; training drops it (convert it to "
                         "JPEG or PNG)", 0.0))
        facts.usable = False
    if min(width, height) < MIN_SIDE:
        problems.append(("image.tiny", None, f"{width}×{height} px; training drops images under {MIN_SIDE} px a side",
                         float(min(width, height))))
        facts.usable = False
    if orientation in ORIENTATION_NAMES:
        problems.append(("image.exif_rotation", None,
                         f"EXIF orientation {orientation} ({ORIENTATION_NAMES[orientation]}): training sees the image "
                         "turned, so boxes drawn on the stored pixels no longer match; bake the rotation in", 0.0))
    if image.mode in GREY_MODES:
        problems.append(("image.grayscale", None, f"{image.mode} (single channel); it is trained as 3 equal channels",
                         0.0))
    elif image.mode in ALPHA_MODES or "transparency" in image.info:
        problems.append(("image.alpha", None, f"{image.mode} with transparency; training drops the alpha channel, so "
                         "transparent areas show whatever colour they hide", 0.0))
    return image


def _orientation(image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION) or 1)
    except Exception:  # broken EXIF: training ignores it as well
        return 1


def _check_ending(facts: ImageFacts, tail: bytes, find_last) -> None:
    """Truncation found from the bytes alone: the decoder would stop early (or ultralytics would rewrite).

    ``tail`` is the end of the file; ``find_last(marker)`` the position of a marker's last occurrence,
    asked only when the file does not end as it should (rare: it reads the whole file).
    """
    problem: Problem | None = None
    if facts.format in ("jpeg", "mpo") and not tail.endswith(b"\xff\xd9"):
        end, last_scan = find_last(b"\xff\xd9"), find_last(b"\xff\xda")
        if end > last_scan >= 0:
            problem = ("image.jpeg_trailing_data", None, f"{facts.file_size - end - 2} bytes after the JPEG end "
                       "marker; ultralytics re-encodes such files in place when it caches labels", 0.0)
        else:
            problem = ("image.truncated", None, "JPEG data stops before its end marker: the bottom of the image is "
                       "missing (grey), and ultralytics rewrites the file in place", 0.0)
    elif facts.format == "png" and b"IEND" not in tail[-16:]:
        problem = ("image.truncated", None, "PNG has no IEND chunk: the file was cut short", 0.0)
    if problem is not None:
        facts.problems.append(problem)
        facts.usable = facts.usable and problem[0] != "image.truncated"


def _dhash(image, fmt: str) -> tuple[int, int]:
    """A 128-bit gradient hash (8×8 horizontal + 8×8 vertical) of a small greyscale thumbnail.

    JPEGs are decoded at 1/2-1/8 scale (DCT scaling). Going through a 32×32 box-filtered thumbnail
    first keeps the hash stable across resizes, re-encodes and formats.
    """
    from PIL import Image

    if fmt in ("jpeg", "mpo"):
        image.draft("L", (2 * THUMB_SIDE, 2 * THUMB_SIDE))
    grey = image.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX, reducing_gap=2.0)
    thumb = np.asarray(grey.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), np.int16)
    horizontal = thumb[:-1, 1:] > thumb[:-1, :-1]
    vertical = thumb[1:, :-1] > thumb[:-1, :-1]
    return (int.from_bytes(np.packbits(horizontal).tobytes(), "big"),
            int.from_bytes(np.packbits(vertical).tobytes(), "big"))
