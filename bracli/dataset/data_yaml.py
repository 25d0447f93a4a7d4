"""The one data.yaml reader: parse it as data, validate it, resolve its root and split entries.

Used by `bra dataset check` (through ``layout``) and meant for the engine too, so both read a data.yaml
the same way. Pure: no ultralytics, nothing executed (``download:`` is returned, never run), nothing
written. Problems come back as ``Issue``s with line numbers instead of exceptions; ``first_error()`` turns
the first error into the one-line message a command can raise.

Differences from ultralytics, on purpose: a relative ``path:`` is resolved next to the YAML file (as
`bra train` does; ultralytics uses the working directory or its datasets folder), and ``nc``/``names`` are
validated up front (an ``nc: abc`` reaches ultralytics as a ``SyntaxError`` deep inside training).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bracli.dataset.fsio import NotRegularFile, read_regular
from bracli.dataset.report import Issue
from bracli.options import MAX_CLASSES  # more is a typo or a memory bomb: ultralytics builds a name per class

SPLITS = ("train", "val", "test")
MAX_YAML_BYTES = 16 << 20  # a data.yaml is a few hundred bytes; anything this big is not one


@dataclass
class DataYaml:
    """What a data.yaml says, validated. ``splits`` holds each split's entries resolved, not yet expanded."""

    path: Path  # the YAML file, absolute
    raw: dict[str, Any]  # the parsed mapping as written ({} when it is not one)
    root: Path  # the dataset root: ``path:`` resolved next to the YAML, else the YAML's folder
    names: list[str] | None  # class names by id (``nc`` alone gives class_0, class_1, …)
    splits: dict[str, list[Path]]  # train/val/test entries (folders, list files or images) as absolute paths
    download: Any | None  # the raw ``download:`` entry: returned, never run
    issues: list[Issue] = field(default_factory=list)
    text: str = field(default="", repr=False)

    @property
    def nc(self) -> int | None:
        return len(self.names) if self.names else None

    def line_of(self, key: str) -> int | None:
        """The line of a top-level ``key:`` in the file (1-based), for pointing at a problem."""
        match = re.search(rf"^{re.escape(key)}\s*:", self.text, re.MULTILINE)
        return self.text.count("\n", 0, match.start()) + 1 if match else None

    def errors(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.severity == "error"]

    def first_error(self) -> str | None:
        """The first error as one line (``/d/data.yaml:3: nc: 'x' is not a positive integer``), or None."""
        for issue in self.errors():
            where = f"{self.path}:{issue.line}" if issue.line else str(self.path)
            return f"{where}: {issue.message}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "root": str(self.root), "names": self.names,
                "splits": {name: [str(p) for p in paths] for name, paths in self.splits.items()},
                "download": self.download, "issues": [issue.to_dict() for issue in self.issues]}


def read_data_yaml(path: Path) -> DataYaml:
    """Read and validate ``path``; every problem is an ``Issue`` in the result (never an exception)."""
    path = _absolute(Path(path).expanduser())
    data = DataYaml(path, {}, path.parent, None, {}, None)
    raw = _parse(data)
    if raw is None:
        return data
    data.raw = raw

    def problem(check: str, message: str, key: str | None = None) -> None:
        data.issues.append(Issue(check, str(path), data.line_of(key) if key else None, message))

    data.download = raw.get("download")
    if data.download:
        problem("yaml.download", "has a download: entry; plain ultralytics runs it (URL fetch, shell command or "
                "Python code) when a split is missing, bra train only with --allow-download. Review it, and "
                "delete it if you do not trust it", "download")
    data.names = _names(raw, problem)
    data.root = _root(raw, path.parent, problem)
    for split in SPLITS:
        key = "validation" if split == "val" and "val" not in raw and "validation" in raw else split
        value = raw.get(key)
        if not value:
            if split != "test":
                problem("yaml.missing_key", f"no '{split}:' entry; training needs both train and val")
            continue
        if not isinstance(value, (str, list)) or (isinstance(value, list) and not all(isinstance(v, str)
                                                                                       for v in value)):
            problem("yaml.parse", f"'{key}:' must be a path or a list of paths", key)
            continue
        if any("\0" in entry for entry in ([value] if isinstance(value, str) else value)):
            problem("yaml.parse", f"'{key}:' holds a NUL byte, which no path can contain", key)
            continue
        data.splits[split] = _split_entries(data.root, value)
    return data


def _parse(data: DataYaml) -> dict[str, Any] | None:
    """The YAML mapping, or None after recording why there is none."""
    import yaml

    shown = str(data.path)
    try:
        raw_bytes, _ = read_regular(shown, MAX_YAML_BYTES)
        if raw_bytes is None:
            data.issues.append(Issue("yaml.parse", shown, None, f"larger than {MAX_YAML_BYTES >> 20} MiB: not a "
                                     "data.yaml"))
            return None
        data.text = raw_bytes.decode("utf-8-sig")
        parsed = yaml.safe_load(data.text)
    except NotRegularFile as e:
        data.issues.append(Issue("yaml.parse", shown, None, f"{e.kind}, not a data.yaml file"))
        return None
    except OSError as e:
        data.issues.append(Issue("yaml.parse", shown, None, f"cannot be read: {e.strerror or e}"))
        return None
    except UnicodeDecodeError:
        data.issues.append(Issue("yaml.parse", shown, None, "not UTF-8 text"))
        return None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        data.issues.append(Issue("yaml.parse", shown, line, f"invalid YAML: {problem}"))
        return None
    except ValueError as e:  # a number too long for Python (over 4,300 digits)
        data.issues.append(Issue("yaml.parse", shown, None, f"invalid YAML: {str(e).splitlines()[0]}"))
        return None
    except RecursionError:
        data.issues.append(Issue("yaml.parse", shown, None, "invalid YAML: nested too deeply"))
        return None
    if not isinstance(parsed, dict):
        data.issues.append(Issue("yaml.parse", shown, None, "expected a mapping with train/val/names keys, found "
                                 f"{type(parsed).__name__}"))
        return None
    return parsed


def _names(raw: dict[str, Any], problem) -> list[str] | None:
    """Class names by id from ``names:`` and/or ``nc:``, after checking they are usable and agree."""
    names, nc_value = raw.get("names"), raw.get("nc")
    if names is None and nc_value is None:
        problem("yaml.missing_key", "no 'names:' (or 'nc:') entry: class ids cannot be checked; add names: "
                "{0: first_class, 1: ...}")
        return None
    nc = None
    if nc_value is not None:
        nc = _positive_int(nc_value)
        if nc is None:
            problem("yaml.names", f"nc: {_short(nc_value)} is not a positive integer (the number of classes)", "nc")
        elif nc > MAX_CLASSES:
            problem("yaml.names", f"nc: {nc} classes is implausible (more than {MAX_CLASSES:,}); check the value",
                    "nc")
            nc = None
    if names is None:
        return [f"class_{i}" for i in range(nc)] if nc else None
    if isinstance(names, dict):
        keys = [_class_id(k) for k in names]
        if None in keys or sorted(keys) != list(range(len(names))):
            problem("yaml.names", "names: keys must be the class ids 0, 1, 2, … without gaps", "names")
            return None
        values = [value for _, value in sorted(zip(keys, names.values(), strict=True), key=lambda kv: kv[0])]
    elif isinstance(names, list):
        values = names
    else:
        problem("yaml.names", f"names: must be a list or a {{id: name}} mapping, found {type(names).__name__}",
                "names")
        return None
    if not values:
        problem("yaml.names", "names: is empty; list at least one class", "names")
        return None
    if len(values) > MAX_CLASSES:
        problem("yaml.names", f"names: lists {len(values):,} classes; at most {MAX_CLASSES:,} are supported", "names")
        return None
    bad = next((i for i, value in enumerate(values) if not isinstance(value, (str, int, float))
                or isinstance(value, bool) or value == ""), None)
    if bad is not None:
        problem("yaml.names", f"names: class {bad} is {_short(values[bad])}; each name must be a plain word",
                "names")
        return None
    if nc is not None and nc != len(values):
        problem("yaml.names", f"nc: {nc} but names: lists {len(values)} classes; training stops on this. "
                "Make them agree (or drop nc)", "nc")
    return [str(value) for value in values]


def _positive_int(value: Any) -> int | None:
    """``value`` as ultralytics would accept it for ``nc`` (3, 3.0, "3"), if it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    if not number.is_integer() or number < 1:
        return None
    return int(number)


def _class_id(key: Any) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    if isinstance(key, str) and key.strip().isdigit():
        return int(key)
    return None


def _short(value: Any) -> str:
    """A value for a message: its repr, cut short (a hostile file can hold a huge one)."""
    text = repr(value) if isinstance(value, (str, int, float, bool)) or value is None else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "…"


def _root(raw: dict[str, Any], yaml_dir: Path, problem) -> Path:
    value = raw.get("path")
    if not value:
        return yaml_dir
    if not isinstance(value, str):
        problem("yaml.parse", f"'path:' must be a folder path, found {type(value).__name__}", "path")
        return yaml_dir
    declared = Path(value).expanduser()
    if declared.is_absolute():
        return _absolute(declared)
    root = _absolute(yaml_dir / declared)
    problem("yaml.relative_path", f"path: {value} is relative: checked {root}. bra train resolves it next to this "
            "file, but plain ultralytics against the working directory (or its datasets_dir); remove path: to mean "
            "this file's folder, or make it absolute", "path")
    return root


def _split_entries(root: Path, value: str | list[str]) -> list[Path]:
    """Each entry joined to the root and resolved, as ultralytics' ``check_det_dataset`` does."""
    if isinstance(value, str):
        resolved = _absolute(root / value)
        if not resolved.exists() and value.startswith("../"):  # ultralytics' second guess for a single entry
            resolved = _absolute(root / value[3:])
        return [resolved]
    return [_absolute(root / entry) for entry in value]


def _absolute(path: Path) -> Path:
    """``path.resolve()``, except that a symlink loop gives the plain absolute path instead of an error."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))
