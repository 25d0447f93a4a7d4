"""Make bracli's modules resolvable by name in ultralytics model YAMLs — without editing ultralytics.

ultralytics' ``parse_model`` looks a module name up in the globals of ``ultralytics.nn.tasks``; setting
an attribute there is the whole registration. ``install_import_hook`` (run by ``import bracli``)
registers right away when that module is already imported, or the moment it gets imported later,
so importing bracli never imports torch or ultralytics by itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

TASKS_MODULE = "ultralytics.nn.tasks"


def registered_modules() -> dict[str, type]:
    """Name → class for every module bracli adds to the YAML vocabulary."""
    from bracli.nn import BiLevelRoutingAttention

    return {"BiLevelRoutingAttention": BiLevelRoutingAttention}


def checkpoint_classes() -> list[type]:
    """Every bracli class a checkpoint pickles: allowed by restricted (``weights_only``) loading."""
    from bracli.nn.bra import BiLevelRoutingAttention, QKVLinear

    return [BiLevelRoutingAttention, QKVLinear]


def register(tasks: ModuleType | None = None) -> None:
    """Add bracli's modules to ultralytics' YAML vocabulary and to torch's restricted-loading allow-list
    (idempotent)."""
    if tasks is None:
        import importlib

        tasks = importlib.import_module(TASKS_MODULE)
    for name, cls in registered_modules().items():
        current = getattr(tasks, name, None)
        if current is not None and current is not cls:
            raise RuntimeError(f"{TASKS_MODULE} already defines a different '{name}'; bracli will not replace it")
        setattr(tasks, name, cls)
    import torch

    torch.serialization.add_safe_globals(checkpoint_classes())


class _RegisterAfterExec(importlib.abc.Loader):
    """Wraps the real loader of ``ultralytics.nn.tasks`` and registers once the module has run."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        register(module)

    def __getattr__(self, name: str):  # get_source, get_filename, ... stay the real loader's
        return getattr(self._loader, name)


class _TasksImportHook(importlib.abc.MetaPathFinder):
    """Finds ``ultralytics.nn.tasks`` with the other finders and swaps in the registering loader."""

    def find_spec(self, fullname: str, path, target=None):
        if fullname != TASKS_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _RegisterAfterExec(spec.loader)
                return spec
        return None


def install_import_hook() -> None:
    """Register now if ultralytics' model module is loaded, else as soon as it is (idempotent)."""
    if TASKS_MODULE in sys.modules:
        register(sys.modules[TASKS_MODULE])
    elif not any(isinstance(f, _TasksImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _TasksImportHook())
