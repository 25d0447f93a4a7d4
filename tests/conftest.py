"""Test-wide settings: a private ultralytics config dir so tests never touch the user's."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="bracli-test-config-"))
os.environ.setdefault("MPLBACKEND", "Agg")

from bracli.engine.setup import setup

setup()  # what every command does first: offline, private, restricted loading, BRA registered


@dataclasses.dataclass
class Outcome:
    code: int
    out: str
    err: str


@pytest.fixture
def bra(capsys):
    """Run the `bra` entry point in-process: exit code, stdout, stderr (exception mapping included)."""
    from bracli.cli import main

    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


# Small enough for 2 CPU cores, large enough that a few epochs learn something measurable.
TINY = {"n_train": 48, "n_val": 12, "imgsz": 128}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small seeded shapes dataset (the sample generator), shared by the end-to-end tests."""
    from bracli.dataset.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("tiny") / "data", seed=1, **TINY)
