"""The CLI shell: help, version, usage errors, and that help never imports torch/ultralytics."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bracli import __version__

COMMANDS = ["init", "train", "val", "predict", "export", "migrate", "profile", "ablate", "demo", "dataset"]


def run_bra(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bracli", *args], capture_output=True, text=True, env=env)


def test_help_lists_every_command():
    result = run_bra("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert f" {name} " in result.stdout


def test_version():
    result = run_bra("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"bra {__version__}"


def test_help_does_not_import_torch_or_ultralytics():
    code = ("import sys\nfrom bracli.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ultralytics', 'cv2') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_unknown_command_suggests():
    result = run_bra("trian")
    assert result.returncode == 2
    assert "Did you mean 'train'" in result.stderr


@pytest.mark.parametrize("command", COMMANDS[:-1])
def test_each_command_has_help_with_example(command):
    result = run_bra(command, "--help")
    assert result.returncode == 0
    assert "Example:" in result.stdout
