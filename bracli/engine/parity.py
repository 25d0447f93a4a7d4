"""Does an exported model compute what the torch model computes? Same letterboxed image, both outputs.

Raw outputs are compared relative to their magnitude (box coordinates are in pixels), and the
detections after NMS must agree: same count, and every detection has a same-class partner with
IoU ≥ 0.9. Segmentation models are compared on both outputs (boxes+coefficients, and mask prototypes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from ultralytics.utils import ASSETS

from bracli.engine.checkpoint import Checkpoint
from bracli.engine.devices import torch_device

DEFAULT_CONF, DEFAULT_IOU = 0.25, 0.7  # ultralytics' predict defaults


@dataclass
class Parity:
    imgsz: tuple[int, int]
    max_abs_diff: float
    scale: float
    detections_torch: int
    detections_export: int
    detections_agree: bool

    def agrees(self, tolerance: float) -> bool:
        return self.detections_agree and self.max_abs_diff <= tolerance * self.scale


def parity_image(checkpoint: Checkpoint) -> Path:
    """A validation image of the data the model was trained on, when it is here; else a bundled sample."""
    from bracli.engine.data import first_val_image

    data = checkpoint.train_args.get("data")
    image = first_val_image(data) if data and Path(str(data)).is_file() else None
    return image or ASSETS / "bus.jpg"


def check_parity(model: torch.nn.Module, exported: Path, image_path: Path, sizes: list[tuple[int, int]], *,
                 half: bool, device: str | None, conf: float | None, iou: float | None) -> list[Parity]:
    """One ``Parity`` per input size: the torch model (fused, as the export is) against the exported file."""
    import copy

    from ultralytics.nn.autobackend import AutoBackend

    dev = torch_device(device)
    reference = copy.deepcopy(model).fuse().eval().to(dev)
    backend = AutoBackend(str(exported), device=dev, fp16=half, verbose=False)
    return [_compare(reference, backend, image_path, size, dev, half, conf, iou) for size in sizes]


def _compare(reference: torch.nn.Module, backend, image_path: Path, size: tuple[int, int], dev: torch.device,
             half: bool, conf: float | None, iou: float | None) -> Parity:
    import cv2
    import numpy as np
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.nms import non_max_suppression

    image = cv2.imread(str(image_path))
    letterboxed = LetterBox(size, auto=False)(image=image)
    x = torch.from_numpy(np.ascontiguousarray(letterboxed[..., ::-1].transpose(2, 0, 1))).float()[None] / 255
    x = x.to(dev)
    with torch.inference_mode():
        expected = _outputs(reference(x))
        got = [torch.as_tensor(t, device=dev).float() for t in _outputs(backend(x.half() if half else x))]
    diff = max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=False))
    scale = max(1.0, max(float(e.abs().max()) for e in expected))
    nm = expected[1].shape[1] if len(expected) > 1 else 0  # mask coefficients ride along with each box
    conf, iou = DEFAULT_CONF if conf is None else conf, DEFAULT_IOU if iou is None else iou
    det_a = non_max_suppression(expected[0], conf, iou, nc=expected[0].shape[1] - 4 - nm)[0]
    det_b = non_max_suppression(got[0], conf, iou, nc=got[0].shape[1] - 4 - nm)[0]
    return Parity(imgsz=size, max_abs_diff=diff, scale=scale, detections_torch=len(det_a),
                  detections_export=len(det_b), detections_agree=same_detections(det_a, det_b))


def _outputs(result) -> list[torch.Tensor]:
    """The tensors an export returns, in its order: predictions, then (segmentation) mask prototypes.

    An export returns them as a list; torch in eval mode returns ``(predictions, extras)`` for detection and
    ``((predictions, prototypes), extras)`` for segmentation.
    """
    if isinstance(result, torch.Tensor):
        return [result]
    first = result[0]
    if isinstance(first, (list, tuple)):
        return [t for t in first if isinstance(t, torch.Tensor)]
    rest = [t for t in result[1:] if isinstance(t, torch.Tensor) and t.dim() == 4]  # an export's prototypes
    return [first, *rest]


def same_detections(a: torch.Tensor, b: torch.Tensor, min_iou: float = 0.9) -> bool:
    """Same count, and every detection has a same-class partner with IoU ≥ min_iou."""
    from torchvision.ops import box_iou

    if len(a) != len(b):
        return False
    if not len(a):
        return True
    ious = box_iou(a[:, :4], b[:, :4])
    same_class = a[:, 5:6] == b[:, 5:6].T
    return bool(((ious >= min_iou) & same_class).any(1).all())
