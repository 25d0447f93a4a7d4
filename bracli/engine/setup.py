"""Prepare a process for ultralytics: offline, private, restricted loading, BRA registered.

Commands call ``setup()`` before they import an engine module (those import ultralytics at their top);
nothing in bracli changes the process on import. What it does, and why:

- ``YOLO_OFFLINE=1``: ultralytics probes DNS at import and uses the result to decide on downloads and
  analytics; offline it does neither. ``YOLO_AUTOINSTALL=False``: it would otherwise ``pip install``
  packages it misses.
- ``ULTRALYTICS_SAFE_LOAD=1`` (unless checkpoints are trusted): ultralytics' own restricted loading —
  checkpoints load with torch's ``weights_only`` unpickler and an allow-list, and a model YAML's
  ``activation:`` is parsed instead of evaluated. It is read once, when ultralytics is first imported.
- ``ORT_DISABLE_TELEMETRY=1`` (honoured by onnxruntime 1.32) and ``ORT_TELEMETRY_DISABLED=1`` (later
  releases): importing onnxruntime would otherwise write a device id under ``~/.cache/Microsoft`` and
  queue usage events.
- ``YOLO_CONFIG_DIR``: unless the user set one, bracli keeps its own ultralytics settings in
  ``$XDG_CONFIG_HOME/bracli`` (default ``~/.config/bracli``), so the user's own ultralytics settings are
  never touched; there analytics (``sync``) and every logging integration are switched off.
- ``Arial.ttf`` / ``Arial.Unicode.ttf``: ultralytics fetches these fonts for plots when missing; bracli
  places matplotlib's DejaVu Sans under those names in the config dir first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ENVIRONMENT = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "ORT_DISABLE_TELEMETRY": "1",
               "ORT_TELEMETRY_DISABLED": "1"}
SAFE_LOAD = "ULTRALYTICS_SAFE_LOAD"
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
PRIVATE_SETTINGS = {"sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False,
                    "raytune": False, "tensorboard": False, "wandb": False, "vscode_msg": False,
                    "openvino_msg": False}


def config_dir() -> Path:
    """The folder ultralytics keeps its settings in (its ``Ultralytics/`` sub-folder) under bracli."""
    if env := os.environ.get("YOLO_CONFIG_DIR"):
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "bracli"


def configure_environment(trust_checkpoints: bool = False) -> None:
    """The environment half of ``setup``: cheap, imports nothing heavy, idempotent."""
    os.environ.update(ENVIRONMENT)
    os.environ[SAFE_LOAD] = "0" if trust_checkpoints else "1"
    directory = config_dir()
    os.environ["YOLO_CONFIG_DIR"] = str(directory)
    _place_fonts(directory / "Ultralytics")


def setup(*, trust_checkpoints: bool = False) -> None:
    """Environment, then ultralytics imported with it: private settings, BRA registered and allow-listed."""
    configure_environment(trust_checkpoints)
    from ultralytics.utils import SETTINGS

    wrong = {k: v for k, v in PRIVATE_SETTINGS.items() if k in SETTINGS and SETTINGS[k] != v}
    if wrong:
        SETTINGS.update(wrong)
    from bracli.engine.register import register

    register()


def _place_fonts(folder: Path) -> None:
    if all((folder / name).exists() for name in FONT_NAMES):
        return
    import matplotlib  # ultralytics depends on it; its data folder ships DejaVu Sans

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name in FONT_NAMES:
            target = folder / name
            if not target.exists():
                tmp = target.with_suffix(f".{os.getpid()}.tmp")
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
    except OSError as e:
        from bracli.errors import BracliError

        raise BracliError(f"cannot prepare bracli's settings folder {folder}: {e.strerror}; set YOLO_CONFIG_DIR "
                          "to a writable folder") from e
