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
from ultralytics.data.utils import img2label_paths

from bracli.dataset.data_yaml import DataYaml, read_data_yaml
from bracli.errors import BracliError
from bracli.files import atomic_write_text
from bracli.formats import IMAGE_EXTENSIONS
from bracli.paths import cache_root

IMAGE_SUFFIXES = {f".{fmt}" for fmt in IMAGE_EXTENSIONS}  # exactly what ultralytics will load
# What numpy pickles for a label cache (a dict of lists, strings, numbers and arrays), in numpy 1.x and 2.x.
CACHE_GLOBALS = frozenset({("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
                           ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                           ("numpy._core.multiarray", "scalar")})
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"


def load_data_yaml(path: Path) -> DataYaml:
    """The data.yaml read and validated by bracli's one reader; its first error as a one-line exception."""
    if not path.exists():
        raise BracliError(f"data file not found: {path}")
    data = read_data_yaml(path)
    problem = data.first_error()
    if problem is not None:
        raise BracliError(problem)
    return data


def check_split(data_yaml: Path, split: str) -> None:
    """A test split is optional in a data.yaml: validating on one it lacks is said plainly, not in ultralytics'
    words after the model has loaded."""
    entries = load_data_yaml(data_yaml).splits.get(split) or []
    if not entries:
        raise BracliError(f"the data.yaml has no '{split}:' split; add one, or validate on val (the default)")
    missing = [source for source in entries if not source.exists()]
    if missing:
        raise BracliError(f"images not found for the {split} split: {missing[0]}")
    if not any(_has_image(source) for source in entries):
        raise BracliError(f"the {split} split of the data.yaml contains no images")


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
    missing = [s for key in ("train", "val") for s in data.splits[key] if not s.exists()]
    if data.download and not allow_download:
        raise BracliError(f"{path} has a 'download:' entry, which ultralytics would execute (URL fetch, shell or "
                          "Python code); remove it, or pass --allow-download if you trust this file")
    if missing and not (allow_download and data.download):
        raise BracliError(f"images not found for {path.name}: {missing[0]}")
    if not missing:
        for key in ("train", "val"):
            if not any(_has_image(s) for s in data.splits[key]):
                raise BracliError(f"the {key} split of {path.name} contains no images")
        check_dataset_files(data)
    declared = data.raw.get("path")
    if declared is None or Path(str(declared)).expanduser().is_absolute():
        return path
    # a relative path: rewrite it absolute in a content-addressed copy (ultralytics would not look next to the YAML)
    resolved = {**data.raw, "path": str(data.root)}
    text = yaml.safe_dump(resolved, sort_keys=False)
    digest = hashlib.sha256(f"{path}\n{text}".encode()).hexdigest()[:12]
    copy = cache_root() / "data" / f"{path.stem}-{digest}.yaml"
    if not copy.exists():
        atomic_write_text(copy, f"# {path} with 'path' resolved by bracli\n{text}", force=True)
    return copy


def check_dataset_files(data: DataYaml) -> None:
    """Refuse what ultralytics would execute or change in the dataset folder: label caches holding anything but
    labels, and JPEGs it would re-encode in place."""
    path = data.path
    for sources in data.splits.values():
        images = list(_image_files(sources))
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
    data = read_data_yaml(Path(data_yaml))
    for source in data.splits.get("val", []):
        if source.is_dir():
            images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if images:
                return images[0]
        elif source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
            return source
    return None
