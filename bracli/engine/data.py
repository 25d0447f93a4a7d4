"""Turn a user's data.yaml into one ultralytics can train on safely, or a one-line reason why not.

ultralytics resolves a relative ``path:`` against its global datasets folder (not the YAML's folder)
and executes a ``download:`` entry when images are missing — a URL fetch, a shell line, or Python.
bracli resolves ``path:`` next to the YAML (writing a resolved copy when needed) and refuses
``download:`` unless the user explicitly allows it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from ultralytics.data.utils import IMG_FORMATS

from bracli.errors import BracliError
from bracli.files import atomic_write_text
from bracli.paths import cache_root

IMAGE_SUFFIXES = {f".{fmt}" for fmt in IMG_FORMATS}  # exactly what ultralytics will load


def load_data_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BracliError(f"data file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise BracliError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise BracliError(f"{path} must be a mapping with train/val/names keys")
    missing = [k for k in ("train", "val") if not data.get(k)]
    if missing:
        raise BracliError(f"{path} has no {' or '.join(repr(k) for k in missing)} entry; a detection "
                          "data.yaml needs train and val image folders or lists")
    if not data.get("names") and not data.get("nc"):
        raise BracliError(f"{path} has neither 'names' nor 'nc'; list the class names under 'names'")
    return data


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
