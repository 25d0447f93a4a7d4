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


CPU_ALLOCATOR = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 4915200000000 bytes. Error code 12 (Cannot allocate memory)")
CUDA_ALLOCATOR = ("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139.80 GiB of "
                  "which 1.25 GiB is free.")


def _torch_oom(text: str) -> BaseException:
    import torch

    return torch.OutOfMemoryError(text)


@pytest.mark.parametrize("make, says", [
    (lambda: RuntimeError(CPU_ALLOCATOR), "out of memory: tried to allocate 4,915.2 GB (CPU)"),
    (lambda: _torch_oom(CUDA_ALLOCATOR), "out of memory: tried to allocate 20.00 GiB (GPU 0)"),
    (lambda: RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"), "out of memory (MPS)"),
    (lambda: MemoryError(), "out of memory"),
])
def test_out_of_memory_is_one_ordinary_line(make, says):
    from bracli.cli import _describe

    assert _describe(make()) == (f"{says}; use a smaller --batch or --imgsz", 1)


def test_other_runtime_errors_stay_internal():
    from bracli.cli import _describe

    assert _describe(RuntimeError("shape mismatch in layer 3")) is None
