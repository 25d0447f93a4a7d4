"""bracli's trainer: AMP modes that need no download (the GPU path is checked on a GPU machine)."""

from __future__ import annotations

import pytest

from bracli.engine.trainer import offline_amp


@pytest.mark.parametrize("amp, device, bf16, expected", [
    (True, "cuda", True, "bf16"),       # ultralytics' fp16 check would download a model: use bf16
    ("fp16", "cuda", True, "bf16"),
    (True, "cuda", False, False),       # no bf16 on this GPU: fp32 rather than a download
    ("bf16", "cuda", True, "bf16"),     # already check-free
    (False, "cuda", True, False),
    ("fp32", "cuda", True, "fp32"),
    (True, "cpu", False, True),         # ultralytics turns AMP off on CPU without any check
])
def test_offline_amp(amp, device, bf16, expected):
    chosen, note = offline_amp(amp, device, bf16)
    assert chosen == expected
    assert (note is None) == (chosen == amp)
