"""From a data.yaml to the lists of image and label files that training will read.

The resolution follows what ultralytics' loader does, so the check looks at the same files training
would: a split is a folder (searched recursively, hidden names skipped), a ``.txt`` list of image paths,
or a list of those; a label path replaces the last ``/images/`` of the image path with ``/labels/`` and
the extension with ``.txt``. Differences, on purpose: the data.yaml is read by ``read_data_yaml`` (a
relative ``path:`` is resolved next to the YAML, ``download:`` is never run), and folders are walked
with ``fsio.walk``, which follows a link to a folder once and reports loops instead of listing the same
images dozens of times.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bracli.dataset.data_yaml import SPLITS, DataYaml, read_data_yaml  # noqa: F401 -- SPLITS is re-exported
from bracli.dataset.fsio import FileTooLarge, read_regular, walk
from bracli.dataset.report import Issue
from bracli.formats import image_extensions

# extensions of images that training silently skips (worth telling the user about); ultralytics' own
# image extensions are taken out of this list when it is used
OTHER_IMAGE_EXTENSIONS = frozenset({"gif", "jfif", "pjpeg", "pjp", "svg", "ico", "ppm", "pgm", "pbm", "pnm", "pcx",
                                    "tga", "exr", "hdr", "psd", "jxl", "apng", "raw", "cr2", "nef", "arw"})
MAX_LIST_BYTES = 256 << 20  # an image list file this big would list tens of millions of images


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
    data: DataYaml | None = None


def label_path(image: str) -> str:
    """The label file training reads for ``image`` (last ``/images/`` → ``/labels/``, extension → ``.txt``)."""
    images, labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return labels.join(image.rsplit(images, 1)).rsplit(".", 1)[0] + ".txt"


def extension(name: str) -> str:
    """What training compares with its format list: the text after the last dot, lower case."""
    return name.rpartition(".")[-1].lower()


def load_layout(data_yaml: Path) -> Layout:
    """Read ``data_yaml`` (safely) and resolve its splits to image files; never executes anything in it."""
    data = read_data_yaml(data_yaml)
    layout = Layout(data.path, data.root, data.names, {}, list(data.issues), data)
    line_of = {split: data.line_of("validation" if split == "val" and "val" not in data.raw else split)
               for split in data.splits}
    for split, entries in data.splits.items():
        written = data.raw.get(split, data.raw.get("validation"))
        layout.splits[split] = _resolve_split(split, entries, written, data, line_of[split], layout.issues)
    return layout


def _resolve_split(name: str, entries: list[Path], written, data: DataYaml, line: int | None,
                   issues: list[Issue]) -> Split:
    split = Split(name)
    shown = str(data.path)
    formats = image_extensions()
    skipped_kinds = OTHER_IMAGE_EXTENSIONS - formats
    for entry, source in zip(written if isinstance(written, list) else [written], entries, strict=True):
        if source.is_dir():
            found = walk(str(source), lambda n: "." in n)
            candidates = found.files
            _walk_issues(found, name, data.root, issues)
            label_folder = os.path.dirname(label_path(os.path.join(str(source), "x.jpg")))
            if label_folder != str(source):
                split.label_folders.add((label_folder, True))
            report_skipped = skipped_kinds
        elif source.exists() and not source.is_file():  # a FIFO or device: never read
            issues.append(Issue("yaml.split_not_found", shown, line, f"{name}: {entry} is neither a folder nor a "
                                "regular file"))
            continue
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
            kind = extension(candidate)
            if kind in formats:
                split.images.append(candidate)
            elif report_skipped is None or kind in report_skipped:
                issues.append(Issue("image.ignored", candidate, None,
                                    f"in {name} but training skips it: '.{kind}' is not an image format it "
                                    "reads; convert it to .jpg/.png or remove it"))
    split.images.sort()
    if not split.images:
        issues.append(Issue("yaml.no_images", shown, line, f"{name}: no images found in {written}"))
    for image in split.images:
        folder = os.path.dirname(label_path(image))
        if (folder, True) not in split.label_folders:
            split.label_folders.add((folder, False))
    return split


def _walk_issues(found, split: str, root: Path, issues: list[Issue]) -> None:
    def shown(path: str) -> str:
        relative = os.path.relpath(path, root)
        return path if relative.startswith("..") else relative

    for link, target in found.loops:
        issues.append(Issue("image.folder_link", link, None,
                            f"is {shown(target)} again, reached through a folder link: a loop. ultralytics follows "
                            "it and lists every image below it again at each level (up to 40 times); this check "
                            "counted them once. Remove the link"))
    for link, target in found.repeats:
        issues.append(Issue("image.folder_link", link, None,
                            f"is {shown(target)} again, reached through a folder link: ultralytics lists its images "
                            f"twice in {split}; this check counted them once. Remove one way in"))
    for folder, reason in found.unreadable:
        issues.append(Issue("image.folder_unreadable", folder, None,
                            f"cannot be listed ({reason}): training silently skips the images in it"))


def _read_list(list_file: Path) -> list[str]:
    """Image paths from a list file: ``./x`` is relative to the list file, other relative paths to the cwd."""
    data, _ = read_regular(str(list_file), MAX_LIST_BYTES)
    if data is None:
        raise FileTooLarge(MAX_LIST_BYTES)
    prefix = str(list_file.parent) + os.sep
    paths = []
    for raw in data.decode("utf-8-sig").strip().splitlines():
        entry = raw.strip()
        if not entry:
            continue
        entry = entry.replace("./", prefix, 1) if entry.startswith("./") else entry
        paths.append(os.path.abspath(entry))
    return paths

