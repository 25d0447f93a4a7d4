"""`engine.export` failures: what a failed export leaves on disk."""

from __future__ import annotations

import copy

import pytest
import torch

from bracli.engine import export
from bracli.engine.checkpoint import Checkpoint, read_checkpoint
from bracli.engine.migrate import migrate
from bracli.errors import BracliError
from tests.legacy_bra import legacy_detector, save_like_ultralytics


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Checkpoint:
    """A bracli checkpoint without training: a blog-style checkpoint, migrated."""
    folder = tmp_path_factory.mktemp("weights")
    blog = save_like_ultralytics(legacy_detector(), folder / "blog.pt")
    return read_checkpoint(migrate(blog, folder / "best.pt").out)


def unrunnable(checkpoint: Checkpoint) -> Checkpoint:
    """The checkpoint with a first convolution whose weight does not fit its input: the exporter's trace fails."""
    model = copy.deepcopy(checkpoint.model)
    first = model.model[0].conv
    first.weight = torch.nn.Parameter(torch.zeros(first.out_channels, first.in_channels + 1, 3, 3))
    return Checkpoint(path=checkpoint.path, data=checkpoint.data, model=model)


def test_a_failed_export_removes_the_folders_it_made_for_out(checkpoint, tmp_path):
    with pytest.raises(BracliError, match="export to onnx failed"):
        export.export(unrunnable(checkpoint), imgsz=64, device="cpu", out=tmp_path / "nd1" / "sub" / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_keeps_folders_that_were_there(checkpoint, tmp_path):
    (tmp_path / "mine").mkdir()
    with pytest.raises(BracliError, match="export to onnx failed"):
        export.export(unrunnable(checkpoint), imgsz=64, device="cpu", out=tmp_path / "mine" / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["mine"] and list((tmp_path / "mine").iterdir()) == []
