"""The trainers bra uses: ultralytics' detection and segmentation trainers, plus BRA registration,
index-aware weights and a process group over torchrun's whole world.

Living in an importable module matters: ultralytics' multi-GPU launcher pickles the trainer class by
reference and re-imports it in every worker process; constructing a trainer registers BRA there.
"""

from __future__ import annotations

import torch
from ultralytics.cfg import DEFAULT_CFG, cfg2dict, get_cfg, get_save_dir
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.models.yolo.segment import SegmentationTrainer
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils import LOGGER, RANK, YAML
from ultralytics.utils.torch_utils import strip_optimizer, unwrap_model

from bracli import options
from bracli.engine import distributed
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
    """Moves pretrained weights across inserted BRA layers by layer identity, uses only AMP modes that need no
    download, and trains over torchrun's whole world. Mixed into ultralytics' task trainers below."""

    transfer_report: TransferReport | None = None
    world_report: distributed.WorldReport | None = None
    _world_pending = False

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict | None = None, _callbacks: dict | None = None) -> None:
        register()
        self.world = distributed.world()
        if self.world.distributed:
            cfg, overrides = self._enter_world(cfg, dict(overrides or {}))
        super().__init__(cfg, overrides, _callbacks)
        if self.world.distributed:
            distributed.check_batch(self.args.batch, self.world, option="batch")
            self.world_size = self.world.size  # ultralytics counts the devices in `device` (0 on the CPU)
            if self.device.type == "cpu" and self.args.amp:
                # what ultralytics' AMP check decides on the CPU, decided alike on every rank up front: on the CPU
                # its broadcast of that decision is skipped (see _setup_train)
                self.args.amp = False
                if self.world.main:
                    YAML.save(self.save_dir / "args.yaml", vars(self.args))
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

    # ------------------------------------------------------------------------------ torchrun's whole world

    def _enter_world(self, cfg, overrides: dict) -> tuple[dict, dict]:
        """Before ultralytics sets up: this process's device (GPU LOCAL_RANK, or the CPU), the process group over
        the whole world, and one run folder for all ranks. ultralytics would have ranks other than 0 pick the
        run folder on their own (an older run's name, whose results.csv a fresh run then deletes)."""
        merged = get_cfg(cfg, overrides)
        given = options.device(str(merged.device)) if merged.device not in (None, "") else None
        device = distributed.local_device(given, self.world, torch.cuda.is_available())
        overrides["device"] = device
        distributed.join(self.world, device)
        if merged.resume:  # the checkpoint names the run folder
            return cfg, overrides
        save_dir = distributed.broadcast(str(get_save_dir(merged)) if self.world.main else None)
        return {**cfg2dict(cfg), "save_dir": ""}, {**overrides, "save_dir": save_dir}

    def _setup_ddp(self) -> None:
        """The group already spans the whole world (``_enter_world``); ultralytics would size it by the local
        device list and index that list by LOCAL_RANK. Only the GPU is pinned here."""
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    def _setup_train(self) -> None:
        if self.world.distributed and self.device.type == "cpu":
            # ultralytics wraps the model as DDP(device_ids=[device.index]): [None] on the CPU, which DDP refuses.
            # The world stays hidden until the model is built, then _build_train_pipeline wraps it for the CPU.
            self.world_size, self._world_pending = 1, True
        super()._setup_train()

    def _build_train_pipeline(self) -> None:
        if self._world_pending:
            self._world_pending = False
            self.world_size = self.world.size
            self.model = distributed.wrap_cpu(self.model, compiled=bool(self.args.compile))
        super()._build_train_pipeline()

    def final_eval(self) -> None:
        """Across a world: record each rank's final parameters, then validate the best weights on every rank
        with rank 0's copy. ultralytics has each rank re-read best.pt, which a node without the run folder
        (or with a stale view of it) cannot, and which puts ranks other than 0 on a GPU even on the CPU."""
        if not self.world.distributed:
            return super().final_eval()
        self.world_report = distributed.world_report(self.world, unwrap_model(self.model))
        best = None
        if self.world.main:
            last = strip_optimizer(self.last) if self.last.exists() else {}
            stripped = strip_optimizer(self.best, updates={"train_results": last.get("train_results")}) \
                if self.best.exists() else {}
            if stripped.get("model") is not None:
                best = {k: v.float() if v.is_floating_point() else v
                        for k, v in stripped["model"].state_dict().items()}
        best = distributed.broadcast(best)
        if best is None:
            return None
        self.ema.ema.load_state_dict(best)
        LOGGER.info(f"\nValidating {self.best} on all {self.world.size} processes...")
        self.metrics, _ = self.validate()
        self.epoch += 1  # as ultralytics: the best weights' metrics are logged one step past the last epoch
        self.run_callbacks("on_fit_epoch_end")
        self.epoch -= 1
        return None

    def train(self) -> None:
        super().train()
        if self.world.distributed:
            distributed.leave()


class BraDetectionTrainer(BraTrainerMixin, DetectionTrainer):
    """ultralytics' detection trainer with bracli's weight transfer, offline AMP and torchrun's world."""


class BraSegmentationTrainer(BraTrainerMixin, SegmentationTrainer):
    """ultralytics' segmentation trainer with bracli's weight transfer, offline AMP and torchrun's world."""


TRAINERS = {"detect": BraDetectionTrainer, "segment": BraSegmentationTrainer}
