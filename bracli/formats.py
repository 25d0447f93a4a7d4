"""The image and video file extensions training accepts: ultralytics' own lists, read without importing it.

``ultralytics.data.utils`` defines ``IMG_FORMATS`` and ``VID_FORMATS``, but importing it pulls in torch
(seconds, and megabytes in every worker process). The sets are plain literals, so they are read from the
installed source file as data: the assignment is found in the text and evaluated with
``ast.literal_eval`` (never executed). If the source cannot be read that way (a zipped or compiled-only
install, a future refactor), the module is imported after all. Results are cached per process.

Use ``IMAGE_EXTENSIONS`` / ``VIDEO_EXTENSIONS`` (frozensets of lower-case extensions without dots,
computed on first access) or the functions ``image_extensions()`` / ``video_extensions()``.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # computed on first access by the module __getattr__ below
    IMAGE_EXTENSIONS: frozenset[str]
    VIDEO_EXTENSIONS: frozenset[str]

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "image_extensions", "video_extensions"]

_SOURCE = ("data", "utils.py")  # inside the ultralytics package


def image_extensions() -> frozenset[str]:
    """ultralytics' ``IMG_FORMATS``: extensions its loaders read as images (``{"jpg", "png", …}``)."""
    return _formats()["IMG_FORMATS"]


def video_extensions() -> frozenset[str]:
    """ultralytics' ``VID_FORMATS``: extensions its predictor reads as videos (``{"mp4", "avi", …}``)."""
    return _formats()["VID_FORMATS"]


def __getattr__(name: str) -> frozenset[str]:
    """``IMAGE_EXTENSIONS`` and ``VIDEO_EXTENSIONS`` as module constants, read on first use."""
    if name == "IMAGE_EXTENSIONS":
        return image_extensions()
    if name == "VIDEO_EXTENSIONS":
        return video_extensions()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _formats() -> dict[str, frozenset[str]]:
    names = ("IMG_FORMATS", "VID_FORMATS")
    source = _ultralytics_source()
    found = _literal_sets(source, names) if source is not None else None
    if found is None:  # the slow way: import it (torch included), offline as every import of it is
        from bracli.engine.setup import configure_environment

        configure_environment()
        from ultralytics.data import utils

        found = {name: getattr(utils, name) for name in names}
    return {name: frozenset(str(ext).lower().lstrip(".") for ext in values) for name, values in found.items()}


def _ultralytics_source() -> str | None:
    """The text of the installed ``ultralytics/data/utils.py`` (found without importing ultralytics)."""
    try:
        spec = importlib.util.find_spec("ultralytics")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            return Path(folder, *_SOURCE).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return None


def _literal_sets(source: str, names: tuple[str, ...]) -> dict[str, set] | None:
    """``NAME = {…}`` set literals of strings at module level; None unless every name is found.

    Each assignment's braces are cut out of the text and parsed alone (a few microseconds); only when
    that fails is the whole module parsed (tens of milliseconds).
    """
    found = {}
    for name in names:
        match = re.search(rf"^{name}\s*=\s*(\{{[^{{}}]*\}})[ \t]*(#[^\n]*)?$", source, re.MULTILINE)
        value = _string_set(match.group(1)) if match else None
        if value is None:
            return _literal_sets_from_module(source, names)
        found[name] = value
    return found


def _literal_sets_from_module(source: str, names: tuple[str, ...]) -> dict[str, set] | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                and node.targets[0].id in names:
            value = _string_set(ast.get_source_segment(source, node.value) or "")
            if value is not None:
                found[node.targets[0].id] = value
    return found if set(found) == set(names) else None


def _string_set(text: str) -> set[str] | None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, (set, frozenset)) and value and all(isinstance(v, str) for v in value):
        return set(value)
    return None
