"""Test-wide settings: a private ultralytics config dir so tests never touch the user's."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="bracli-test-config-"))
os.environ.setdefault("MPLBACKEND", "Agg")
