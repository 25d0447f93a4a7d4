"""The trainer bra uses: ultralytics' detection trainer, plus BRA registration and index-aware weights.

Living in an importable module matters: ultralytics' multi-GPU launcher pickles the trainer class by
reference and re-imports it in every worker process, and importing this module registers BRA there.
"""

from __future__ import annotations

from bracli.engine import offline

offline.guard()

import torch  # noqa: E402
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402
from ultralytics.utils import LOGGER, RANK, YAML  # noqa: E402

from bracli.engine.register import register  # noqa: E402
from bracli.engine.transfer import TransferReport, transfer_weights  # noqa: E402

register()


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


class BraDetectionTrainer(DetectionTrainer):
    """Detection trainer that moves pretrained weights across inserted BRA layers by layer identity,
    and uses only AMP modes that need no download."""

    transfer_report: TransferReport | None = None

    def __init__(self, *args, **kwargs) -> None:
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
