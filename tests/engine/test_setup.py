"""Set-up: offline and private settings, restricted loading, no telemetry, and a full train/val/predict run with
no network attempt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bracli.engine import setup as engine_setup


def test_environment_and_fonts(tmp_path, monkeypatch):
    monkeypatch.delenv("YOLO_CONFIG_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for key in ("YOLO_OFFLINE", "ORT_DISABLE_TELEMETRY", engine_setup.SAFE_LOAD):
        monkeypatch.setenv(key, "0")
    engine_setup.configure_environment()
    assert os.environ["YOLO_OFFLINE"] == "1"
    assert os.environ["YOLO_AUTOINSTALL"] == "False"
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "1"
    assert os.environ[engine_setup.SAFE_LOAD] == "1"
    assert Path(os.environ["YOLO_CONFIG_DIR"]) == tmp_path / "bracli"
    for name in engine_setup.FONT_NAMES:
        assert (tmp_path / "bracli" / "Ultralytics" / name).stat().st_size > 100_000
    engine_setup.configure_environment(trust_checkpoints=True)
    assert os.environ[engine_setup.SAFE_LOAD] == "0"


def test_respects_a_user_config_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv(engine_setup.SAFE_LOAD, "1")
    engine_setup.configure_environment()
    assert os.environ["YOLO_CONFIG_DIR"] == str(tmp_path / "mine")
    assert (tmp_path / "mine" / "Ultralytics" / "Arial.ttf").is_file()


def test_settings_private_and_loading_restricted_after_setup():
    from ultralytics.utils import SAFE_LOAD, SETTINGS

    engine_setup.setup()
    assert all(SETTINGS[key] == value for key, value in engine_setup.PRIVATE_SETTINGS.items())
    assert SAFE_LOAD  # the test session set up before ultralytics was imported, as every command does


NETWORK_GUARD = """
import ipaddress, json, socket, sys
attempts = []

def _public(host):
    if not isinstance(host, str):
        return False
    if host in ("localhost", ""):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: resolving it is already a network attempt

def _guard(original):
    def guarded(self, address, *args):
        if self.family in (socket.AF_INET, socket.AF_INET6) and _public(address[0]):
            attempts.append(f"connect {address!r}")
            raise OSError("network blocked by the test")
        return original(self, address, *args)
    return guarded

socket.socket.connect = _guard(socket.socket.connect)
socket.socket.connect_ex = _guard(socket.socket.connect_ex)
_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if _public(host):
        attempts.append(f"resolve {host!r}")
        raise socket.gaierror("name resolution blocked by the test")
    return _getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo

if sys.argv[1] == "control":  # ultralytics imported without bracli's guard
    import ultralytics.utils
    print("RESULT " + json.dumps({"attempts": attempts, "codes": []}))
    raise SystemExit

from bracli.cli import main
codes = []
for argv in json.loads(sys.argv[1]):
    try:
        main(argv)
        codes.append(0)
    except SystemExit as e:
        codes.append(e.code)
print("RESULT " + json.dumps({"attempts": attempts, "codes": codes}))
"""


def run_guarded(argument: str, tmp_path: Path, env: dict[str, str]) -> tuple[dict, str]:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(NETWORK_GUARD), argument],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(line[len("RESULT "):]), done.stdout[-3000:] + done.stderr[-3000:]


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YOLO_")}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "config")  # a first run: settings and fonts created from scratch
    return env


def test_the_harness_catches_attempts(tmp_path):
    """Control: without bracli's guard, importing ultralytics already probes the network."""
    result, log = run_guarded("control", tmp_path, clean_env(tmp_path))
    assert result["attempts"], log


@pytest.mark.slow
def test_train_val_predict_make_no_network_attempt(tiny_data, tmp_path):
    project = tmp_path / "runs"
    image = next((tiny_data.parent / "images" / "val").glob("*.jpg"))
    best = project / "net" / "weights" / "best.pt"
    commands = [
        ["train", str(tiny_data), "--epochs", "1", "--imgsz", "64", "--batch", "4", "--project", str(project),
         "--name", "net", "--device", "cpu"],
        ["val", str(best), "--data", str(tiny_data), "--imgsz", "64", "--project", str(project)],
        ["predict", str(image), "--model", str(best), "--imgsz", "64", "--project", str(project)],
    ]
    result, log = run_guarded(json.dumps(commands), tmp_path, clean_env(tmp_path))
    assert result["codes"] == [0, 0, 0], log
    assert result["attempts"] == [], log
