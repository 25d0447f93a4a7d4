"""Whether the device a user named exists here, said in one line before any work starts."""

from __future__ import annotations

import torch

from bracli.errors import BracliError


def check_device(device: str | None) -> None:
    """``device`` as ``bracli.options.device`` normalised it: cpu, mps, or GPU indices (``0``, ``0,1``)."""
    if device in (None, "cpu"):
        return
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise BracliError("--device mps: this machine has no Apple GPU; use --device cpu")
        return
    indices = [int(i) for i in device.split(",")]
    typed = ",".join(f"cuda:{i}" for i in indices)  # the spelling that names the kind of device (0 is cuda:0)
    if not torch.cuda.is_available():
        raise BracliError(f"--device {typed}: torch sees no CUDA GPU here; use --device cpu")
    count = torch.cuda.device_count()
    missing = [i for i in indices if i >= count]
    if missing:
        raise BracliError(f"--device {typed}: there is no GPU {missing[0]} (this machine has {count})")


def torch_device(device: str | None) -> torch.device:
    """The first device of ``device`` as torch spells it (the default: the first GPU, else the CPU)."""
    check_device(device)
    if device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if device in ("cpu", "mps"):
        return torch.device(device)
    return torch.device(f"cuda:{device.split(',')[0]}")
