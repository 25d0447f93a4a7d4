"""``KEY=VALUE`` extras checked against ultralytics' own configuration: the key exists, the value fits.

What an extra may be (syntax, keys that have their own option) is decided in ``bracli.options``; here
ultralytics' ``default.yaml`` and its type checks decide the rest, so bracli never keeps a second list.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from ultralytics.cfg import DEFAULT_CFG_DICT, check_cfg, smart_value

from bracli.errors import UsageError


def validate_extras(extras: Mapping[str, Any] | None) -> dict[str, Any]:
    """Raw strings (from the command line) or values (from Python) → typed, validated ultralytics arguments."""
    validated: dict[str, Any] = {}
    for key, value in (extras or {}).items():
        if key not in DEFAULT_CFG_DICT:
            close = difflib.get_close_matches(key, DEFAULT_CFG_DICT.keys(), n=1)
            hint = f"; did you mean {close[0]}=?" if close else ""
            raise UsageError(f"unknown ultralytics argument {key!r}{hint}")
        validated[key] = smart_value(value) if isinstance(value, str) else value
    try:
        check_cfg(dict(validated), hard=True)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e).splitlines()[0]) from e
    return validated
