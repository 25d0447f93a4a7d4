"""See where BRA looks: capture every BRA layer's routing while ultralytics predicts, and draw it over each image.

A forward pre-hook on each BRA layer of the predictor's own model calls that layer's ``route`` on the exact
input the layer receives, so the picture shows the routing the prediction used, not a re-computation from
another input. Regions are numbered over the padded feature map; they reach image pixels through the layer's
stride (network input = feature map × stride) and ultralytics' own letterbox inverse (``scale_boxes``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from ultralytics.utils.ops import scale_boxes

from bracli.errors import UsageError
from bracli.measure.flops import model_layers
from bracli.nn.bra import BiLevelRoutingAttention
from bracli.routing_figure import RegionGrid, RoutingPicture, draw_routing

FOLDER = "routing"  # pictures go to this sub-folder of the predictions folder
_FRAME = re.compile(r"frame (\d+)/")  # how ultralytics' loaders state a video frame's number


@dataclass
class BraLayer:
    """A BRA module and the top-level layer it sits in."""

    index: int
    placement: str | None
    module: BiLevelRoutingAttention


@dataclass
class Captured:
    """One BRA layer's routing for the last batch: ``(batch, regions, topk)`` and the map it routed."""

    routes: np.ndarray
    feature_hw: tuple[int, int]


def bra_layers(model: nn.Module) -> list[BraLayer]:
    """Every BRA module of a YOLO model, with its layer index and placement (when the model was rendered)."""
    meta = (getattr(model, "yaml", None) or {}).get("bra") or {}
    placements = {layer.get("index"): layer.get("placement") for layer in meta.get("layers", [])
                  if isinstance(layer, dict)}
    return [BraLayer(index, placements.get(index), module) for index, layer in enumerate(model_layers(model))
            for module in layer.modules() if isinstance(module, BiLevelRoutingAttention)]


def check_routable(model: nn.Module, extras: dict[str, Any]) -> None:
    """``--routing`` needs BRA layers, and one forward per batch (test-time augmentation runs several)."""
    if not bra_layers(model):
        raise UsageError("--routing: this model has no BRA layer, so there is no routing to show")
    if extras.get("augment"):
        raise UsageError("--routing shows the routing of one forward; drop augment=True (it runs several)")


class RoutingRecorder:
    """Hooks the predictor's model when ultralytics sets it up, and draws each result's routing on request.

    ``query``: a point ``(x, y)`` in image pixels whose region's routes are drawn; default the centre of the
    highest-scoring detection, else the image centre.
    """

    def __init__(self, yolo, query: tuple[float, float] | None = None) -> None:
        self.query = query
        self.predictor = None
        self.layers: list[BraLayer] = []
        self.captured: dict[int, Captured] = {}
        self.input_hw: tuple[int, int] | None = None
        self.next_in_batch = 0
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        yolo.add_callback("on_predict_start", self._attach)

    def _attach(self, predictor) -> None:
        """Runs inside ultralytics' predict loop, once the predictor has its own (copied, fused) model."""
        self.close()
        self.predictor = predictor
        model = getattr(predictor.model, "model", None)
        if not isinstance(model, nn.Module):
            raise UsageError("--routing needs a PyTorch model")
        self.layers = bra_layers(model)
        self.handles.append(model.register_forward_pre_hook(self._network_input))
        for layer in self.layers:
            self.handles.append(layer.module.register_forward_pre_hook(self._capture(layer.index)))

    def _network_input(self, _module: nn.Module, args: tuple[Any, ...]) -> None:
        self.input_hw = tuple(args[0].shape[-2:])
        self.captured.clear()
        self.next_in_batch = 0

    def _capture(self, index: int):
        def hook(module: BiLevelRoutingAttention, args: tuple[Any, ...]) -> None:
            x = args[0]
            self.captured[index] = Captured(module.route(x).cpu().numpy(), tuple(x.shape[-2:]))

        return hook  # returns None: the layer's input is not replaced

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def draw(self, result, folder: Path) -> list[Path]:
        """One picture per BRA layer for the next result of the current batch, written under ``folder``."""
        position = self.next_in_batch
        self.next_in_batch += 1
        if self.input_hw is None:
            return []
        image = _rgb(result.orig_img)
        height, width = image.shape[:2]
        stem = self._stem(result, position)
        written = []
        for layer in self.layers:
            captured = self.captured.get(layer.index)
            if captured is None:
                continue
            h, w = captured.feature_hw
            layout = layer.module.region_grid(h, w)
            grid = region_grid(layout, captured.feature_hw, self.input_hw, (height, width))
            query, note, box = self._query(result, grid, width, height)
            stride = self.input_hw[0] // h
            where = f" (BRA after {layer.placement})" if layer.placement else ""
            title = (f"{Path(result.path).name}{stem[1]} · layer {layer.index}{where} · map {h}×{w} at stride "
                     f"{stride} · {layout[0]}×{layout[1]} regions of {layout[2]}×{layout[3]} tokens · "
                     f"top-{layer.module.topk}")
            picture = RoutingPicture(image=image, grid=grid, routes=captured.routes[position], query=query,
                                     query_note=note, title=title, box=box)
            written.append(draw_routing(picture, _free(folder / f"{stem[0]}-layer{layer.index}.png")))
        return written

    def _stem(self, result, position: int) -> tuple[str, str]:
        """File stem and title suffix: the image's stem, plus the frame number for videos and streams."""
        stem = Path(result.path).stem
        dataset = getattr(self.predictor, "dataset", None)
        if getattr(dataset, "mode", "image") == "image":
            return stem, ""
        info = (self.predictor.batch or ((), (), ()))[2]
        match = _FRAME.search(info[position]) if position < len(info) else None
        frame = int(match[1]) if match else getattr(dataset, "frame", 0)
        return f"{stem}_{frame}", f" frame {frame}"

    def _query(self, result, grid: RegionGrid, width: int, height: int
               ) -> tuple[int, str, tuple[float, float, float, float] | None]:
        """The query region: the given point's, else under the top detection's centre, else the image centre's."""
        if self.query is not None:
            x, y = self.query
            clamped = min(max(x, 0.0), width - 1.0), min(max(y, 0.0), height - 1.0)
            note = f"at --routing-query {x:g},{y:g}" + (" (outside the image: nearest edge)"
                                                        if clamped != (x, y) else "")
            return grid.region_at(*clamped), note, None
        boxes = result.boxes
        if boxes is not None and len(boxes):
            best = int(boxes.conf.argmax())
            x0, y0, x1, y1 = (float(v) for v in boxes.xyxy[best].tolist())
            name = result.names[int(boxes.cls[best])]
            note = f"under the top detection ({name} {float(boxes.conf[best]):.2f})"
            return grid.region_at((x0 + x1) / 2, (y0 + y1) / 2), note, (x0, y0, x1, y1)
        return grid.region_at(width / 2, height / 2), "at the image centre (no detection)", None


def region_grid(layout: tuple[int, int, int, int], feature_hw: tuple[int, int], input_hw: tuple[int, int],
                image_hw: tuple[int, int]) -> RegionGrid:
    """A BRA layer's region grid in image pixels.

    ``layout`` is the layer's own ``(rows, cols, region_h, region_w)`` for the map (``feature_hw``), which it
    pads right/bottom to whole regions; one map cell covers ``input / map`` network-input pixels; the network
    input is the image letterboxed (ultralytics' ``scale_boxes`` undoes that, without clipping: edges beyond
    the image stay where they are).
    """
    rows, cols, region_h, region_w = layout
    (h, w), (input_h, input_w) = feature_hw, input_hw
    cell_y, cell_x = input_h / h, input_w / w
    sides = max(rows, cols) + 1
    points = np.zeros((sides, 4))  # xywh with zero size: scale_boxes maps the centre, unclipped
    points[:, 0] = np.arange(sides) * region_w * cell_x
    points[:, 1] = np.arange(sides) * region_h * cell_y
    mapped = scale_boxes(input_hw, points, image_hw, xywh=True)
    return RegionGrid(tuple(float(v) for v in mapped[: cols + 1, 0]), tuple(float(v) for v in mapped[: rows + 1, 1]))


def _rgb(image: np.ndarray) -> np.ndarray:
    """ultralytics' BGR (or one-channel grey) frame as RGB for drawing."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        return np.repeat(image, 3, axis=-1)
    return np.ascontiguousarray(image[..., 2::-1])


def _free(path: Path) -> Path:
    """``path``, or ``name-2.png``, ``-3``… when a same-stem image of the same source already wrote it."""
    candidate, k = path, 1
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.stem}-{k}{path.suffix}")
    return candidate
