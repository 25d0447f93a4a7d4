"""Where bracli keeps what it generates (sample data, resolved data files)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$BRA_CACHE_DIR``, else ``$XDG_CACHE_HOME/bracli``, else ``~/.cache/bracli``."""
    if env := os.environ.get("BRA_CACHE_DIR"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "bracli"
