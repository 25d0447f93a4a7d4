"""Keep ultralytics offline and private. ``guard()`` must run before ultralytics is first imported.

What it does, and why:
- ``YOLO_OFFLINE=1``: ultralytics probes DNS at import and uses the result to decide on downloads
  and analytics; offline it does neither.
- ``YOLO_AUTOINSTALL=False``: ultralytics would otherwise ``pip install`` packages it misses.
- ``YOLO_CONFIG_DIR``: unless the user set one, bracli keeps its own ultralytics settings in
  ``$XDG_CONFIG_HOME/bracli`` (default ``~/.config/bracli``), so the user's own ultralytics settings
  are never touched. There analytics (``sync``) and every logging integration are switched off.
- ``Arial.ttf`` / ``Arial.Unicode.ttf``: ultralytics fetches these fonts for plots when missing;
  bracli places matplotlib's DejaVu Sans under those names in the config dir first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
PRIVATE_SETTINGS = {"sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False,
                    "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False,
                    "openvino_msg": False}


def config_dir() -> Path:
    """The folder ultralytics keeps its settings in (its ``Ultralytics/`` sub-folder) under bracli."""
    if env := os.environ.get("YOLO_CONFIG_DIR"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "bracli"


def guard() -> None:
    """Set the environment that keeps ultralytics offline; idempotent, cheap, imports nothing heavy."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    directory = config_dir()
    os.environ["YOLO_CONFIG_DIR"] = str(directory)
    _place_fonts(directory / "Ultralytics")


def _place_fonts(folder: Path) -> None:
    if all((folder / name).exists() for name in FONT_NAMES):
        return
    import matplotlib  # ultralytics depends on it; its data folder ships DejaVu Sans

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    folder.mkdir(parents=True, exist_ok=True)
    for name in FONT_NAMES:
        target = folder / name
        if not target.exists():
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)


def settle_settings() -> None:
    """Switch analytics and integrations off in the settings ultralytics loaded (after its import)."""
    from ultralytics.utils import SETTINGS

    wrong = {k: v for k, v in PRIVATE_SETTINGS.items() if k in SETTINGS and SETTINGS[k] != v}
    if wrong:
        SETTINGS.update(wrong)
