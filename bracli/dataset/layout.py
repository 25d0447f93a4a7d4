"""From a data.yaml to the lists of image and label files that training will read.

The resolution follows what ultralytics' loader does, so the check looks at the same files training
would: a split is a folder (searched recursively), a ``.txt`` list of image paths, or a list of those;
a label path replaces the last ``/images/`` of the image path with ``/labels/`` and the extension with
``.txt``. Two differences, on purpose: a relative ``path:`` is resolved next to the YAML file first (and
reported, since ultralytics resolves it against the working directory), and ``download:`` is never run.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bracli.dataset.report import Issue

# the image extensions ultralytics' loader accepts; other files in an image folder are skipped by training
IMG_FORMATS = frozenset({"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff",
                         "webp"})
# extensions of images that training silently skips (worth telling the user about)
SKIPPED_IMAGE_EXTENSIONS = frozenset({"gif", "jfif", "pjpeg", "pjp", "svg", "ico", "ppm", "pgm", "pbm", "pnm", "pcx",
                                      "tga", "exr", "hdr", "psd", "jxl", "apng", "raw", "cr2", "nef", "arw"})
SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """The images of one split, in training order, and the folders its label files live in."""

    name: str
    images: list[str] = field(default_factory=list)
    label_folders: set[tuple[str, bool]] = field(default_factory=set)  # (folder, recursive)
    list_files: set[str] = field(default_factory=set)


@dataclass
class Layout:
    """What a data.yaml declares, resolved to files; ``issues`` are the problems found on the way."""

    yaml_path: Path
    root: Path
    names: list[str] | None
    splits: dict[str, Split]
    issues: list[Issue]


def label_path(image: str) -> str:
    """The label file training reads for ``image`` (last ``/images/`` → ``/labels/``, extension → ``.txt``)."""
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return labels.join(image.rsplit(images, 1)).rsplit(".", 1)[0] + ".txt"


def load_layout(data_yaml: Path) -> Layout:
    """Parse ``data_yaml`` safely and resolve its splits; never executes anything it contains."""
    import yaml

    data_yaml = data_yaml.resolve()
    shown = str(data_yaml)
    layout = Layout(data_yaml, data_yaml.parent, None, {}, [])
    try:
        text = data_yaml.read_text(encoding="utf-8-sig")
        data = yaml.safe_load(text)
    except UnicodeDecodeError:
        layout.issues.append(Issue("yaml.parse", shown, None, "not UTF-8 text"))
        return layout
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        layout.issues.append(Issue("yaml.parse", shown, line, f"invalid YAML: {problem}"))
        return layout
    if not isinstance(data, dict):
        layout.issues.append(Issue("yaml.parse", shown, None, "expected a mapping with train/val/names keys, "
                                   f"found {type(data).__name__}"))
        return layout

    def line_of(key: str) -> int | None:
        match = re.search(rf"^{re.escape(key)}\s*:", text, re.MULTILINE)
        return text.count("\n", 0, match.start()) + 1 if match else None

    if data.get("download"):
        layout.issues.append(Issue("yaml.download", shown, line_of("download"),
                                   "has a download: entry; plain ultralytics runs it (URL fetch, shell command or "
                                   "Python code) when a split is missing, bra train only with --allow-download. "
                                   "Review it, and delete it if you do not trust it"))
    layout.names = _names(data, shown, line_of, layout.issues)
    layout.root = _root(data, data_yaml.parent, shown, line_of("path"), layout.issues)
    if "val" not in data and "validation" in data:
        data["val"] = data["validation"]
    for split in SPLITS:
        value = data.get(split)
        if not value:
            if split != "test":
                layout.issues.append(Issue("yaml.missing_key", shown, None,
                                           f"no '{split}:' entry; training needs both train and val"))
            continue
        if not isinstance(value, (str, list)) or (isinstance(value, list) and
                                                   not all(isinstance(v, str) for v in value)):
            layout.issues.append(Issue("yaml.parse", shown, line_of(split),
                                       f"'{split}:' must be a path or a list of paths"))
            continue
        layout.splits[split] = _resolve_split(split, value, layout.root, shown, line_of(split), layout.issues)
    return layout


def _names(data: dict[str, Any], shown: str, line_of, issues: list[Issue]) -> list[str] | None:
    names, nc = data.get("names"), data.get("nc")
    if names is None and nc is None:
        issues.append(Issue("yaml.missing_key", shown, None, "no 'names:' (or 'nc:') entry: class ids cannot "
                            "be checked; add names: {0: first_class, 1: ...}"))
        return None
    if nc is not None:
        try:
            if float(nc) != int(float(nc)) or int(float(nc)) < 1:
                raise ValueError
            nc = int(float(nc))
        except (TypeError, ValueError):
            issues.append(Issue("yaml.names", shown, line_of("nc"), f"nc: {nc!r} is not a positive integer"))
            nc = None
    if names is None:
        return [f"class_{i}" for i in range(nc)] if nc else None
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            keys = []
        if keys != list(range(len(names))):
            issues.append(Issue("yaml.names", shown, line_of("names"),
                                "names: keys must be the class ids 0, 1, 2, … without gaps"))
            return None
        names = [str(names[k] if k in names else names[str(k)]) for k in keys]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    else:
        issues.append(Issue("yaml.names", shown, line_of("names"), "names: must be a list or a {id: name} mapping"))
        return None
    if nc is not None and nc != len(names):
        issues.append(Issue("yaml.names", shown, line_of("nc"),
                            f"nc: {nc} but names: lists {len(names)} classes; training stops on this. "
                            "Make them agree (or drop nc)"))
    return names


def _root(data: dict[str, Any], yaml_dir: Path, shown: str, line: int | None, issues: list[Issue]) -> Path:
    value = data.get("path")
    if not value:
        return yaml_dir
    path = Path(str(value)).expanduser()
    if path.is_absolute():
        return path.resolve()
    beside_yaml, from_cwd = (yaml_dir / path).resolve(), path.resolve()
    root = beside_yaml if beside_yaml.exists() or not from_cwd.exists() else from_cwd
    issues.append(Issue("yaml.relative_path", shown, line,
                        f"path: {value} is relative: checked {root}. bra train resolves it next to this file, but "
                        "plain ultralytics against the working directory (or its datasets_dir); remove path: to mean "
                        "this file's folder, or make it absolute"))
    return root


def _resolve_split(name: str, value: str | list[str], root: Path, shown: str, line: int | None,
                   issues: list[Issue]) -> Split:
    split = Split(name)
    for entry in value if isinstance(value, list) else [value]:
        source = (root / entry).resolve()
        if not source.exists() and entry.startswith("../"):
            source = (root / entry[3:]).resolve()
        if source.is_dir():
            candidates = glob.glob(os.path.join(glob.escape(str(source)), "**", "*.*"), recursive=True)
            label_folder = os.path.dirname(label_path(os.path.join(str(source), "x.jpg")))
            if label_folder != str(source):
                split.label_folders.add((label_folder, True))
            report_skipped = SKIPPED_IMAGE_EXTENSIONS
        elif source.is_file():
            try:
                candidates = _read_list(source)
            except (UnicodeDecodeError, OSError):
                issues.append(Issue("yaml.split_not_found", shown, line, f"{name}: {entry} is neither a folder nor "
                                    "a text file listing image paths"))
                continue
            split.list_files.add(str(source))
            report_skipped = None  # every listed file that training skips is worth reporting
        else:
            issues.append(Issue("yaml.split_not_found", shown, line, f"{name}: {entry} → {source} does not exist"))
            continue
        for candidate in candidates:
            extension = candidate.rpartition(".")[-1].lower()
            if extension in IMG_FORMATS:
                split.images.append(candidate)
            elif report_skipped is None or extension in report_skipped:
                issues.append(Issue("image.ignored", candidate, None,
                                    f"in {name} but training skips it: '.{extension}' is not an image format it "
                                    "reads; convert it to .jpg/.png or remove it"))
    split.images.sort()
    if not split.images:
        issues.append(Issue("yaml.no_images", shown, line, f"{name}: no images found in {value}"))
    for image in split.images:
        folder = os.path.dirname(label_path(image))
        if (folder, True) not in split.label_folders:
            split.label_folders.add((folder, False))
    return split


def _read_list(list_file: Path) -> list[str]:
    """Image paths from a list file: ``./x`` is relative to the list file, other relative paths to the cwd."""
    prefix = str(list_file.parent) + os.sep
    paths = []
    for raw in list_file.read_text(encoding="utf-8-sig").strip().splitlines():
        entry = raw.strip()
        if not entry:
            continue
        entry = entry.replace("./", prefix, 1) if entry.startswith("./") else entry
        paths.append(os.path.abspath(entry))
    return paths
