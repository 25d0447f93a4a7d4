"""``KEY=VALUE`` extras checked against ultralytics' own configuration: the key exists, the value fits.

What an extra may be (syntax, keys that have their own option) is decided in ``bracli.options``; here
ultralytics' ``default.yaml`` and its type checks decide the rest, so bracli never keeps a second list. A few
keys ultralytics types loosely are checked by meaning here too (a ``classes=foo`` it would accept filters out
every label), and keys that would bypass bracli or return what bracli does not report are refused.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg, smart_value

from bracli.errors import UsageError

# Keys ultralytics knows that bracli refuses, and why (what to do instead).
REFUSED = {
    "cfg": "it replaces every argument from a file; give the arguments themselves",
    "embed": "bracli reports detections, not feature embeddings",
    "tracker": "bracli has no track mode",
}
# Arguments ultralytics 8.4 renamed; its default.yaml no longer lists them.
RENAMED = {"half": "quantize=16", "int8": "quantize=8"}


def validate_extras(extras: Mapping[str, Any] | None) -> dict[str, Any]:
    """Raw strings (from the command line) or values (from Python) → typed, validated ultralytics arguments."""
    validated: dict[str, Any] = {}
    for key, value in (extras or {}).items():
        if key in RENAMED:
            raise UsageError(f"unknown ultralytics argument {key!r}; use {RENAMED[key]}")
        if key not in DEFAULT_CFG_DICT:
            close = difflib.get_close_matches(key, DEFAULT_CFG_DICT.keys(), n=1)
            hint = f"; did you mean {close[0]}=?" if close else ""
            raise UsageError(f"unknown ultralytics argument {key!r}{hint}")
        if key in REFUSED:
            raise UsageError(f"{key}= is not taken: {REFUSED[key]}")
        validated[key] = smart_value(value) if isinstance(value, str) else value
    try:
        check_cfg(dict(validated), hard=True)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e).splitlines()[0]) from e
    for key, check in _MEANING.items():
        if key in validated:
            check(validated[key])
    return validated


def _ints(value: Any) -> list[Any]:
    """The value as a list of its items (a single value is a list of one)."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_classes(value: Any) -> None:
    if value is None:
        return
    if not _ints(value) or not all(_is_int(v) and v >= 0 for v in _ints(value)):
        raise UsageError(f"classes={value!r}: give a class id or a list of them, e.g. classes=0 or classes=[0,2]")


# A module inside a layer, as ultralytics names it in a freeze list: "23.cv2".
_MODULE_NAME = re.compile(r"\d+(\.\w+)+")


def _check_freeze(value: Any) -> None:
    if value is None or (_is_int(value) and value >= 0):
        return
    if not (isinstance(value, (list, tuple)) and all(
            (_is_int(v) and v >= 0) or (isinstance(v, str) and _MODULE_NAME.fullmatch(v)) for v in value)):
        raise UsageError(f"freeze={value!r}: give a number of first layers or a list of layer indices (or module "
                         "names), e.g. freeze=10 or freeze=[0,1,2] or freeze=['23.cv2']")


_MEANING = {"classes": _check_classes, "freeze": _check_freeze}


def check_class_ids(extras: Mapping[str, Any], names: Mapping[int, str] | list[str] | None) -> None:
    """``classes=`` ids the model does not have would filter out everything: refuse them once the model is known."""
    if extras.get("classes") is None or not names:
        return
    unknown = [c for c in _ints(extras["classes"]) if c >= len(names)]
    if unknown:
        raise UsageError(f"classes={extras['classes']!r}: the model has {len(names)} classes (ids 0-{len(names) - 1}); "
                         f"no class {', '.join(map(str, unknown))}")
