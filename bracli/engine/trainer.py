"""The trainers bra uses: ultralytics' detection and segmentation trainers, plus BRA registration and
index-aware weights.

Living in an importable module matters: ultralytics' multi-GPU launcher pickles the trainer class by
reference and re-imports it in every worker process; constructing a trainer registers BRA there.
"""

from __future__ import annotations

import torch
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER, RANK, YAML

from bracli.engine.register import register
from bracli.engine.transfer import TransferReport, transfer_weights


def offline_amp(amp: bool | str, device_type: str, bf16_supported: bool) -> tuple[bool | str, str | None]:
    """The AMP setting that trains without a download, and a note when it differs from the one asked for.

    ultralytics checks fp16 AMP on CUDA by running a model it downloads first; bf16 autocast skips that
    check (and needs no loss scaling). So on CUDA, fp16 AMP becomes bf16 where the GPU has it, else fp32.
    """
    if device_type != "cuda" or amp in (False, "fp32", "bf16"):
        return amp, None
    if bf16_supported:
        return "bf16", "AMP: bf16 autocast (ultralytics' fp16 AMP check downloads a model; bracli stays offline)"
    return False, ("AMP off: this GPU lacks bf16 and ultralytics' fp16 AMP check downloads a model; "
                   "training in fp32 (bracli stays offline)")


class BraTrainerMixin:
    """Moves pretrained weights across inserted BRA layers by layer identity, and uses only AMP modes that
    need no download. Mixed into ultralytics' task trainers below."""

    transfer_report: TransferReport | None = None

    def __init__(self, *args, **kwargs) -> None:
        register()
        super().__init__(*args, **kwargs)
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)
        amp, note = offline_amp(self.args.amp, self.device.type, bf16)
        if note:
            self.args.amp = amp
            if RANK in {-1, 0}:
                LOGGER.info(f"bracli: {note}")
                YAML.save(self.save_dir / "args.yaml", vars(self.args))  # record what really runs

    def get_model(self, cfg=None, weights=None, verbose: bool = True) -> DetectionModel:
        model = super().get_model(cfg=cfg, weights=None, verbose=verbose)
        if weights:
            self.transfer_report = transfer_weights(model, weights)
            if RANK in {-1, 0}:
                LOGGER.info(f"bracli: {self.transfer_report.summary()}")
        return model


class BraDetectionTrainer(BraTrainerMixin, DetectionTrainer):
    """ultralytics' detection trainer with bracli's weight transfer and offline AMP."""


class BraSegmentationTrainer(BraTrainerMixin, SegmentationTrainer):
    """ultralytics' segmentation trainer with bracli's weight transfer and offline AMP."""


TRAINERS = {"detect": BraDetectionTrainer, "segment": BraSegmentationTrainer}
