"""Turn a user's data.yaml into one ultralytics can train on safely, or a one-line reason why not.

ultralytics resolves a relative ``path:`` against its global datasets folder (not the YAML's folder)
and executes a ``download:`` entry when images are missing — a URL fetch, a shell line, or Python.
bracli resolves ``path:`` next to the YAML (writing a resolved copy when needed) and refuses
``download:`` unless the user explicitly allows it.

Two more things in a dataset folder would otherwise act on the user's machine or files when ultralytics
reads it: a label cache (``labels/train.cache``) is a pickle that ultralytics unpickles in full, and a
JPEG that decodes but lacks its end marker is re-encoded in place ("corrupt JPEG restored and saved").
Both are refused before ultralytics sees the dataset, as are class lists that would exhaust memory.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image
from ultralytics.data.utils import IMG_FORMATS, img2label_paths

from bracli.engine.models import shown
from bracli.errors import BracliError
from bracli.files import atomic_write_text
from bracli.options import MAX_CLASSES
from bracli.paths import cache_root

IMAGE_SUFFIXES = {f".{fmt}" for fmt in IMG_FORMATS}  # exactly what ultralytics will load
SPLITS = ("train", "val", "test")
# What numpy pickles for a label cache (a dict of lists, strings, numbers and arrays), in numpy 1.x and 2.x.
CACHE_GLOBALS = frozenset({("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
                           ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                           ("numpy._core.multiarray", "scalar")})
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def load_data_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BracliError(f"data file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:  # ValueError: an integer of over 4,300 digits
        raise BracliError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise BracliError(f"{path} must be a mapping with train/val/names keys")
    missing = [k for k in ("train", "val") if not data.get(k)]
    if missing:
        raise BracliError(f"{path} has no {' or '.join(repr(k) for k in missing)} entry; a detection "
                          "data.yaml needs train and val image folders or lists")
    if not data.get("names") and not data.get("nc"):
        raise BracliError(f"{path} has neither 'names' nor 'nc'; list the class names under 'names'")
    _check_types(data, path)
    return data


def _check_types(data: dict[str, Any], path: Path) -> None:
    """Paths are strings and classes are a bounded list of names: a YAML alias bomb or a huge ``nc`` would
    otherwise be expanded by ultralytics (it makes a name for each class) until memory runs out."""
    for key in ("path", *SPLITS):
        value = data.get(key)
        entries = value if isinstance(value, list) else [value]
        if value is not None and not all(isinstance(e, (str, int, float)) and not isinstance(e, bool)
                                         for e in entries):
            raise BracliError(f"{path}: '{key}' must be a path or a list of paths, not {shown(value)}")
    nc, names = data.get("nc"), data.get("names")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or not 1 <= nc <= MAX_CLASSES):
        raise BracliError(f"{path}: nc {shown(nc)} must be a whole number of classes from 1 to {MAX_CLASSES:,}")
    if names is None:
        return
    if not isinstance(names, (list, dict)):
        raise BracliError(f"{path}: 'names' must list the class names (a list, or a mapping from 0, 1, … to "
                          f"names), not {shown(names)}")
    if len(names) > MAX_CLASSES:
        raise BracliError(f"{path}: {len(names):,} class names; at most {MAX_CLASSES:,} are supported")
    values = list(names.values() if isinstance(names, dict) else names)
    bad = [v for v in values if not isinstance(v, (str, int, float))]
    if bad:
        raise BracliError(f"{path}: each class name must be text, not {shown(bad[0])}")
    if isinstance(names, dict) and sorted(_class_id(k) for k in names) != list(range(len(names))):
        raise BracliError(f"{path}: 'names' must be keyed 0 to {len(names) - 1} (class ids), got "
                          f"{', '.join(shown(k) for k in list(names)[:5])}")
    if nc is not None and nc != len(names):
        raise BracliError(f"{path}: nc is {nc} but 'names' lists {len(names)} classes; make them agree")


def _class_id(key: Any) -> int:
    """A class id as ultralytics reads a ``names`` key (``int(key)``); -1 for one it cannot read."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    return int(key) if isinstance(key, str) and key.strip().isdigit() else -1


def _split_sources(root: Path, entry: Any) -> list[Path]:
    entries = entry if isinstance(entry, list) else [entry]
    return [p if (p := Path(str(e)).expanduser()).is_absolute() else root / p for e in entries]


def _has_image(source: Path) -> bool:
    if source.is_file() and source.suffix == ".txt":
        return any(line.strip() for line in source.read_text(encoding="utf-8", errors="replace").splitlines())
    if source.is_dir():
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in source.rglob("*"))
    return source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES


def resolve_data(data_yaml: str | Path, allow_download: bool = False) -> Path:
    """Validate ``data_yaml`` and return a path ultralytics can use as is (maybe a resolved copy)."""
    path = Path(data_yaml).expanduser().resolve()
    data = load_data_yaml(path)
    declared = data.get("path")
    root = Path(str(declared)).expanduser() if declared else path.parent
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    missing = [s for key in ("train", "val") for s in _split_sources(root, data[key]) if not s.exists()]
    if data.get("download") and not allow_download:
        raise BracliError(f"{path} has a 'download:' entry, which ultralytics would execute (URL fetch, shell or "
                          "Python code); remove it, or pass --allow-download if you trust this file")
    if missing and not (allow_download and data.get("download")):
        raise BracliError(f"images not found for {path.name}: {missing[0]}")
    if not missing:
        for key in ("train", "val"):
            if not any(_has_image(s) for s in _split_sources(root, data[key])):
                raise BracliError(f"the {key} split of {path.name} contains no images")
        check_dataset_files(root, data, path)
    if declared is None or Path(str(declared)).expanduser().is_absolute():
        return path
    # a relative path: rewrite it absolute in a content-addressed copy (ultralytics would not look next to the YAML)
    resolved = {**data, "path": str(root)}
    text = yaml.safe_dump(resolved, sort_keys=False)
    digest = hashlib.sha256(f"{path}\n{text}".encode()).hexdigest()[:12]
    copy = cache_root() / "data" / f"{path.stem}-{digest}.yaml"
    if not copy.exists():
        atomic_write_text(copy, f"# {path} with 'path' resolved by bracli\n{text}", force=True)
    return copy


def check_dataset_files(root: Path, data: dict[str, Any], path: Path) -> None:
    """Refuse what ultralytics would execute or change in the dataset folder: label caches holding anything but
    labels, and JPEGs it would re-encode in place."""
    for key in SPLITS:
        if not data.get(key):
            continue
        images = list(_image_files(_split_sources(root, data[key])))
        for cache in sorted({Path(label).parent.with_suffix(".cache") for label in img2label_paths(images)}):
            refused = _foreign_global(cache)
            if refused:
                raise BracliError(f"{cache} is not a label cache: it would run code when ultralytics unpickles it "
                                  f"(it calls {refused}); delete it — ultralytics rebuilds the cache from the labels")
        rewritten = [image for image in images if _rewritten_in_place(image)]
        if rewritten:
            more = f" and {len(rewritten) - 1} more" if len(rewritten) > 1 else ""
            raise BracliError(f"{rewritten[0]}{more}: a JPEG without its end marker, which ultralytics would "
                              f"re-encode in place, replacing your file — re-save or remove it (bra dataset check "
                              f"{path} lists such images)")


def _image_files(sources: list[Path]) -> Iterator[str]:
    """The image files ultralytics reads for a split: folders searched recursively, list files line by line."""
    for source in sources:
        if source.is_dir():
            found = glob.glob(str(Path(glob.escape(str(source))) / "**" / "*.*"), recursive=True)
        elif source.is_file() and source.suffix.lower() not in IMAGE_SUFFIXES:  # a list of images
            parent = str(source.parent) + os.sep
            lines = source.read_text(encoding="utf-8-sig", errors="replace").strip().splitlines()
            found = [line.replace("./", parent, 1) if line.startswith("./") else line for line in lines]
        else:
            found = [str(source)]
        yield from (f for f in found if Path(f).suffix.lower() in IMAGE_SUFFIXES)


class _Refused(pickle.UnpicklingError):
    """A global a label cache never needs; its name is the message."""


class _CacheUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in CACHE_GLOBALS:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)


def _foreign_global(cache: Path) -> str | None:
    """What a ``.cache`` file refers to beyond numpy's arrays, read without running it (None when it is clean or
    not a readable cache, which ultralytics then rebuilds)."""
    try:
        with open(cache, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(f)
            if not dtype.hasobject:
                return None
            _CacheUnpickler(f).load()
    except _Refused as e:
        return str(e)
    except Exception:  # not a cache at all: ultralytics' own load fails on it and rebuilds
        return None
    return None


def _rewritten_in_place(image: str) -> bool:
    """ultralytics' ``check_image`` re-saves a JPEG that PIL verifies but that does not end with the end marker."""
    try:
        with open(image, "rb") as f:
            if f.read(2) != JPEG_START:
                return False
            f.seek(-2, os.SEEK_END)
            if f.read(2) == JPEG_END:
                return False
        with Image.open(image) as im:
            im.verify()
            return (im.format or "").lower() in ("jpeg", "jpg")
    except Exception:  # unreadable: ultralytics drops it without rewriting
        return False


def first_val_image(data_yaml: str | Path) -> Path | None:
    """One validation image of a dataset (for checks that want an in-domain input), or None."""
    path = Path(data_yaml)
    try:
        data = load_data_yaml(path)
    except BracliError:
        return None
    declared = data.get("path")
    root = Path(str(declared)).expanduser() if declared else path.parent
    root = root if root.is_absolute() else (path.parent / root)
    for source in _split_sources(root, data["val"]):
        if source.is_dir():
            images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if images:
                return images[0]
        elif source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
            return source
    return None
