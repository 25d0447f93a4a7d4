"""bracli: YOLO detectors with BiFormer's Bi-Level Routing Attention, from dataset to deployment.

The public Python API is ``__all__`` below; everything is imported on first use, so ``import bracli``
stays instant (no torch, no ultralytics). ``import bracli`` also makes ``BiLevelRoutingAttention``
resolvable by ultralytics' YAML parser the moment ultralytics' model module is (or already was)
imported — the one thing it does to the process.

The engine functions (``train``, ``val``, ``predict``, ``export``, ``measure_cost``) run ``setup()``
when first looked up: ultralytics offline and private, checkpoints loaded restricted.
"""

from __future__ import annotations

import importlib
from typing import Any

from bracli.engine.register import install_import_hook

__version__ = "0.1.0"

_LIBRARY = {  # name -> module that defines it (no ultralytics needed)
    "BiLevelRoutingAttention": "bracli.nn.bra",
    "render": "bracli.templates",
    "model_filename": "bracli.templates",
    "check_dataset": "bracli.dataset.check",
    "write_sample": "bracli.dataset.sample",
    "count_flops": "bracli.measure.flops",
}
_ENGINE = {  # name -> engine module (ultralytics is imported after setup())
    "setup": "bracli.engine.setup",
    "ModelChoice": "bracli.engine.train",
    "train": "bracli.engine.train",
    "val": "bracli.engine.val",
    "predict": "bracli.engine.predict",
    "export": "bracli.engine.export",
    "measure_cost": "bracli.engine.cost",
    "read_checkpoint": "bracli.engine.checkpoint",
}
_RENAMED = {"check_dataset": "check"}

__all__ = sorted([*_LIBRARY, *_ENGINE, "__version__"])


def __getattr__(name: str) -> Any:
    if name in _LIBRARY:
        return getattr(importlib.import_module(_LIBRARY[name]), _RENAMED.get(name, name))
    if name in _ENGINE:
        if name != "setup":
            from bracli.engine.setup import setup

            setup()
        return getattr(importlib.import_module(_ENGINE[name]), name)
    raise AttributeError(f"module 'bracli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


install_import_hook()
