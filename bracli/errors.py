"""The exceptions bracli raises on purpose; the CLI maps each to a one-line message and an exit code."""

from __future__ import annotations

import re


class BracliError(Exception):
    """Something the user can fix went wrong (bad file, failed run). Exit code 1."""

    exit_code = 1


class UsageError(BracliError):
    """The command line itself is wrong (bad option value, conflicting flags). Exit code 2."""

    exit_code = 2


class OutputExistsError(UsageError):
    """An output file exists and ``--force`` was not given; nothing was written."""

    def __init__(self, path: object) -> None:
        super().__init__(f"{path} already exists; pass --force to overwrite it")


class MissingDependencyError(BracliError):
    """An optional package a feature needs is not installed. bracli never installs packages itself."""

    def __init__(self, package: str, feature: str) -> None:
        super().__init__(f"{feature} needs the Python package '{package}', which is not installed "
                         f"(pip install {package})")


# How allocators say they ran out: torch's CPU allocator, CUDA's caching allocator, Apple's MPS backend.
_NO_MEMORY = re.compile(r"can't allocate memory|out of memory|not enough memory", re.IGNORECASE)
_BYTES = re.compile(r"allocate (\d+) bytes")
_SIZE = re.compile(r"[Tt]ried to allocate ([\d.]+ ?[KMGT]i?B)")
_GPU = re.compile(r"\bGPU (\d+)")


def out_of_memory(error: BaseException) -> BracliError | None:
    """Running out of memory, as the ordinary failure it is (the batch or image size was too large); None otherwise.

    Recognised by class name and message, so the caller need not import torch: ``MemoryError``,
    ``torch.OutOfMemoryError`` (CUDA) and the RuntimeError torch's CPU allocator raises."""
    text = str(error)
    if not (isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError"
            or (isinstance(error, RuntimeError) and _NO_MEMORY.search(text))):
        return None
    if (count := _BYTES.search(text)) is not None:
        size = _readable(int(count.group(1)))
    elif (given := _SIZE.search(text)) is not None:
        size = given.group(1)
    else:
        size = None
    where = ("CPU" if "CPUAllocator" in text else f"GPU {gpu.group(1)}" if (gpu := _GPU.search(text))
             else "MPS" if "MPS" in text else None)
    tried = f": tried to allocate {size}" if size else ""
    return BracliError(f"out of memory{tried}{f' ({where})' if where else ''}; use a smaller --batch or --imgsz")


def _readable(count: int) -> str:
    return f"{count / 1e9:,.1f} GB" if count >= 1e8 else f"{count / 1e6:,.1f} MB"
