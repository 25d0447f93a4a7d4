"""Pretrained weights move across inserted BRA layers: every vanilla tensor arrives, values equal."""

from __future__ import annotations

import pytest
import torch

from bracli import templates
from bracli.engine import models
from bracli.engine.transfer import layer_keys, transfer_weights
from bracli.nn import BiLevelRoutingAttention


def randomised(model):
    """Give every tensor a distinct random value, so 'equal' cannot happen by accident."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen))
    return model


def expected_index(vanilla_index: int, bra_model) -> int:
    plain = [i for i, layer in enumerate(bra_model.model) if not isinstance(layer, BiLevelRoutingAttention)]
    return plain[vanilla_index]


@pytest.mark.parametrize("placements", [["p3"], ["backbone-p4", "p5"], ["sppf", "p3", "p4"]])
def test_every_vanilla_tensor_arrives(placements):
    vanilla = randomised(models.build(templates.render("n", []), nc=3))
    bra = models.build(templates.render("n", placements), nc=3)
    fresh_before = {k: v.clone() for k, v in bra.state_dict().items()}
    report = transfer_weights(bra, vanilla)

    assert report.complete, report.summary()
    assert report.transferred == report.source_tensors == len(vanilla.state_dict())
    target = bra.state_dict()
    for key, value in vanilla.state_dict().items():
        _, index, *rest = key.split(".")
        moved = ".".join(["model", str(expected_index(int(index), bra)), *rest])
        assert torch.equal(target[moved], value), key
    bra_indices = [i for i, layer in enumerate(bra.model) if isinstance(layer, BiLevelRoutingAttention)]
    assert report.fresh_bra_layers == bra_indices
    for i in bra_indices:  # BRA layers keep their own initialisation
        for key in (k for k in target if k.startswith(f"model.{i}.")):
            assert torch.equal(target[key], fresh_before[key])


def test_plain_key_matching_would_lose_most_layers():
    """The problem being solved: ultralytics' key+shape matching misses every layer after the insertion."""
    vanilla = randomised(models.build(templates.render("n", []), nc=3))
    bra = models.build(templates.render("n", ["backbone-p3"]), nc=3)
    target = bra.state_dict()
    same = sum(1 for k, v in vanilla.state_dict().items() if k in target and target[k].shape == v.shape
               and k.split(".")[1].isdigit() and int(k.split(".")[1]) < 5)
    report = transfer_weights(bra, vanilla)
    assert report.transferred > 2 * same


def test_bra_to_bra_keeps_matching_bra_layers():
    source = randomised(models.build(templates.render("n", ["p3", "p4"]), nc=3))
    target = models.build(templates.render("n", ["p4"]), nc=3)
    report = transfer_weights(target, source)
    p4_source = next(i for i, k in layer_keys(source.model).items() if k[0] == "bra" and k[1] == 18)
    p4_target = next(i for i, k in layer_keys(target.model).items() if k[0] == "bra")
    assert torch.equal(target.model[p4_target].qkv.qkv.weight, source.model[p4_source].qkv.qkv.weight)
    assert report.fresh_bra_layers == []
    assert set(report.skipped.values()) == {"layer absent in the model"}  # only the p3 BRA layer stays behind


def test_class_count_change_reports_the_head():
    vanilla = randomised(models.build(templates.render("n", []), nc=80))
    bra = models.build(templates.render("n", ["p3"]), nc=3)
    report = transfer_weights(bra, vanilla)
    assert not report.complete
    assert all(key.split(".")[1] == "22" for key in report.skipped)  # only Detect (vanilla index 22)
    assert "shape differs" in report.summary()
