"""Pretrained weights that survive inserted layers.

ultralytics copies weights by key and shape, so inserting a BRA layer at index i shifts every later
layer's key (``model.17.*`` becomes ``model.18.*``) and those layers silently start from scratch.
Here every layer gets an identity that does not depend on insertions — a plain layer is known by
its position among the non-BRA layers (its index in the vanilla graph of any family — YOLOv8,
YOLO11, YOLO26), a BRA layer by the plain layer it follows. The source model is re-indexed to the
target's layout and then loaded with ultralytics' own ``load`` (which also adapts the class head
when the class count differs); the report is taken afterwards by comparing values, so it says what
really arrived. Heads of different tasks share their detection branches (a Segment head is a Detect
head plus mask branches), so a detection checkpoint fills a segmentation model's box and class
branches, and the report names the mask tensors that start fresh.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from bracli.nn import BiLevelRoutingAttention

SHOWN_MODULES = 4  # fresh tensors are summarised per module, the first few by name
LayerKey = tuple[str, int]  # ("layer", vanilla index) or ("bra", vanilla index of the layer it follows)


@dataclass
class TransferReport:
    """What moved from the source weights into the model, and what did not (with the reason)."""

    transferred: int
    source_tensors: int
    target_tensors: int
    fresh_bra_layers: list[int] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # source key -> reason
    fresh: list[str] = field(default_factory=list)  # model tensors outside BRA layers that got no source value

    @property
    def complete(self) -> bool:
        return self.transferred == self.source_tensors

    def to_dict(self) -> dict:
        return {**asdict(self), "complete": self.complete, "summary": self.summary()}

    def summary(self) -> str:
        text = f"transferred {self.transferred}/{self.source_tensors} source tensors"
        if self.skipped:
            reasons = Counter(self.skipped.values())
            text += " (not transferred: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()) + ")"
        if self.fresh_bra_layers:
            text += f"; BRA layers {self.fresh_bra_layers} initialised fresh"
        if self.fresh:
            modules = list(Counter(".".join(key.split(".")[:3]) for key in self.fresh).items())
            shown = ", ".join(f"{module} ({n})" for module, n in modules[:SHOWN_MODULES])
            more = f" and {len(modules) - SHOWN_MODULES} more modules" if len(modules) > SHOWN_MODULES else ""
            text += f"; {len(self.fresh)} model tensors had no source and start fresh: {shown}{more}"
        return text


def layer_keys(layers: nn.Sequential) -> dict[int, LayerKey]:
    """Map each model-layer index to its insertion-independent identity."""
    keys: dict[int, LayerKey] = {}
    plain = -1
    for index, layer in enumerate(layers):
        if isinstance(layer, BiLevelRoutingAttention):
            keys[index] = ("bra", plain)
        else:
            plain += 1
            keys[index] = ("layer", plain)
    return keys


def align(source: nn.Module, target: nn.Module) -> tuple[nn.Module, dict[int, int], dict[str, str]]:
    """A copy of ``source`` whose layers sit at the indices their counterparts have in ``target``.

    Returns the copy, the target-index -> source-index map, and the source tensors that have no
    counterpart (key -> reason). Target slots without a source layer hold an ``nn.Identity`` (no
    tensors), so they keep their own weights.
    """
    aligned = copy.deepcopy(source)
    source_layers = list(aligned.model)
    source_ids = layer_keys(aligned.model)
    by_id = {key: index for index, key in source_ids.items()}
    target_ids = layer_keys(target.model)
    heads = (len(target.model) - 1, len(source_layers) - 1)
    slots: list[nn.Module] = []
    mapping: dict[int, int] = {}
    for index, identity in target_ids.items():
        src = by_id.get(identity)
        if src is not None and _compatible(source_layers[src], target.model[index], (index, src) == heads):
            slots.append(source_layers[src])
            mapping[index] = src
        else:
            slots.append(nn.Identity())
    used = set(mapping.values())
    unmatched = {}
    for key in source.state_dict():
        src = int(key.split(".")[1])
        if src not in used:
            has_slot = source_ids[src] in target_ids.values()
            unmatched[key] = "layer type differs" if has_slot else "layer absent in the model"
    aligned.model = nn.Sequential(*slots)
    return aligned, mapping, unmatched


def _compatible(source: nn.Module, target: nn.Module, heads: bool) -> bool:
    """Same layer type; for the two heads, also one head type extending the other (Detect -> Segment)."""
    if type(source) is type(target):
        return True
    return heads and (isinstance(source, type(target)) or isinstance(target, type(source)))


def transfer_weights(model: nn.Module, source: nn.Module) -> TransferReport:
    """Load ``source`` (an ultralytics detection or segmentation model) into ``model`` across inserted/removed
    BRA layers, per tensor (same key and shape once re-indexed)."""
    aligned, mapping, skipped = align(source, model)
    model.load(aligned, verbose=False)
    target_state = model.state_dict()
    transferred = 0
    arrived: set[str] = set()
    for key, value in aligned.state_dict().items():
        _, index, rest = key.split(".", 2)
        source_key = f"model.{mapping[int(index)]}.{rest}"
        mine = target_state.get(key)
        if mine is None:
            skipped[source_key] = "tensor absent in the model"
        elif mine.shape != value.shape:
            skipped[source_key] = "shape differs (e.g. class count)"
        elif torch.equal(mine.to(value.dtype).cpu(), value.cpu()):
            transferred += 1
            arrived.add(key)
        else:
            skipped[source_key] = "not loaded"
    touched = set(mapping)
    ids = layer_keys(model.model)
    fresh_bra = [i for i, key in ids.items() if key[0] == "bra" and i not in touched]
    fresh = [key for key in target_state if key not in arrived and ids[int(key.split(".")[1])][0] == "layer"]
    return TransferReport(transferred=transferred, source_tensors=len(source.state_dict()),
                          target_tensors=len(target_state), fresh_bra_layers=fresh_bra, skipped=skipped, fresh=fresh)
