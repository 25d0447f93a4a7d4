"""The adversarial suite's shared world and its one assertion.

One tiny run is trained once per session (8 train / 4 val images of 64 px, stopped after its first epoch of
two, so its ``last.pt`` can be resumed) on a dataset whose train labels are hostile; every case reuses its
checkpoints and dataset, copying what it edits. Payloads write a marker file when they run, so "nothing ran"
is a file that does not exist.

``expect(inputs=…, markers=…).run(*argv, code=…, says=…)`` is the one assertion every case makes: the exit code,
one ``✘`` line on stderr with no traceback and no "internal error", inputs byte-identical, no new empty folder,
the payload's markers absent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pickle
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

# Labels ultralytics must drop (NaN, infinity, a negative class, a class id of 20 digits, bytes that are not
# text, one line of 25,000 numbers) — training goes on with the rest and changes none of them.
HOSTILE_LABELS = {
    "train_00000.txt": "0 nan 0.5 0.2 0.2\n",
    "train_00001.txt": "0 inf -1 1e308 0.2\n-1 0.5 0.5 0.2 0.2\n",
    "train_00002.txt": "99999999999999999999 0.5 0.5 0.2 0.2\n",
    "train_00003.txt": b"\x00\xff\xfe\x80garbage\n",
    "train_00004.txt": "0 " + "0.5 " * 25_000 + "\n",
}
ENV_SET_BY_BRACLI = ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED",
                     "ULTRALYTICS_SAFE_LOAD", "BRA_TRUST_CHECKPOINTS")


@dataclasses.dataclass
class World:
    """What the whole suite shares (read-only: a case copies what it edits)."""

    root: Path
    data: Path  # data.yaml of the tiny dataset (no path: key, train/val next to it)
    best: Path
    last: Path  # resumable: the run stopped after epoch 1 of 2
    hashes_before_training: dict[str, str]
    hashes_after_training: dict[str, str]

    @property
    def dataset(self) -> Path:
        return self.data.parent

    @property
    def image(self) -> Path:
        return sorted((self.dataset / "images" / "val").glob("*.jpg"))[0]

    def checkpoint(self, which: str = "best") -> dict[str, Any]:
        """A fresh copy of a checkpoint's dict (our own file, loaded in full) for a case to edit."""
        return torch.load(self.best if which == "best" else self.last, weights_only=False)

    def copy_dataset(self, to: Path) -> Path:
        """The tiny dataset copied (without ultralytics' label caches); returns the copy's data.yaml."""
        shutil.copytree(self.dataset, to, ignore=shutil.ignore_patterns("*.cache"))
        return to / "data.yaml"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    from bracli.dataset.sample import write_sample
    from bracli.engine import train

    root = tmp_path_factory.mktemp("world")
    data = write_sample(root / "data", seed=5, n_train=8, n_val=4, imgsz=64)
    for name, text in HOSTILE_LABELS.items():
        label = data.parent / "labels" / "train" / name
        label.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = tree_hashes(data.parent)

    class Stop(Exception):
        pass

    def stop_after_first_epoch(trainer) -> None:
        if trainer.epoch == 0:
            raise Stop

    with contextlib.suppress(Stop):
        train.train(data, train.ModelChoice(), project=root / "runs", name="tiny", epochs=2, imgsz=64, batch=4,
                    workers=0, device="cpu", extras={"warmup_epochs": 0, "val": False, "plots": False},
                    callbacks={"on_model_save": stop_after_first_epoch})
    weights = root / "runs" / "tiny" / "weights"
    return World(root=root, data=data, best=weights / "best.pt", last=weights / "last.pt",
                 hashes_before_training=before, hashes_after_training=tree_hashes(data.parent))


@pytest.fixture(autouse=True)
def _contained(tmp_path, monkeypatch):
    """Each case runs in its own folder (./runs lands there) with bracli's cache there too, and leaves the
    process environment as it found it (a command given --trust-checkpoint would change it)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BRA_CACHE_DIR", str(tmp_path / "bracli-cache"))
    for key in ENV_SET_BY_BRACLI:
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("BRA_TRUST_CHECKPOINTS", raising=False)


# ------------------------------------------------------------------------------------------------ payloads


class Call:
    """Pickles as "call ``function(*args)``" — what a crafted checkpoint does on unpickling. Callable, so it can
    itself be the function of another call (a chain such as ``getattr(__import__('os'), 'system')``)."""

    def __init__(self, function: Any, *args: Any) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args

    def __call__(self, *args: Any) -> None:
        raise AssertionError("only ever pickled")


def write_marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('payload ran')"


def payload(kind: str, marker: Path) -> Any:
    """An object whose unpickling writes ``marker``, by one of several routes a restricted loader must refuse."""
    code = write_marker_code(marker)
    if kind in ("exec", "legacy-format", "raw-pickle", "inside-a-real-checkpoint"):
        return Call(exec, code)
    if kind == "os.system":
        return Call(os.system, f"touch '{marker}'")
    if kind == "torch.save":  # a torch function, to a loader that allows torch's tensor types
        return Call(torch.save, {"x": 1}, str(marker))
    if kind == "numpy.save":  # a numpy function, to a loader that allows numpy's array types
        return Call(np.save, str(marker), np.zeros(1))
    if kind == "import-chain":  # getattr(__import__('os'), 'system')('touch …')
        return Call(Call(getattr, Call(__import__, "os"), "system"), f"touch '{marker}'")
    raise ValueError(kind)


def write_pickle(path: Path, kind: str, marker: Path, world: World | None = None) -> Path:
    """A ``.pt`` file carrying ``payload(kind)``, saved the way its kind says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    evil = payload(kind, marker if kind != "numpy.save" else marker.with_suffix(".npy"))
    if kind == "raw-pickle":
        path.write_bytes(pickle.dumps(evil, protocol=0))
    elif kind == "legacy-format":
        torch.save({"model": evil}, path, _use_new_zipfile_serialization=False)
    elif kind == "inside-a-real-checkpoint":
        checkpoint = world.checkpoint("last")
        checkpoint["train_args"]["note"] = evil  # the model itself loads fine; one extra value runs code
        torch.save(checkpoint, path)
    else:
        torch.save({"model": evil, "train_args": {}}, path)
    return path


def markers_of(marker: Path) -> list[Path]:
    """Every file a payload aimed at ``marker`` might have written (numpy.save adds .npy)."""
    return [marker, marker.with_suffix(".npy")]


def write_label_cache_payload(cache: Path, marker: Path) -> None:
    """A ``labels/<split>.cache`` (numpy's format, a pickle inside) whose loading writes ``marker``."""
    holder = np.empty((), dtype=object)
    holder[()] = {"version": "1.0.3", "payload": Call(exec, write_marker_code(marker))}
    with open(cache, "wb") as f:
        np.save(f, holder, allow_pickle=True)


# ------------------------------------------------------------------------------------------------- checks


def tree_hashes(*roots: Path, skip: Callable[[Path], bool] = lambda p: p.suffix == ".cache") -> dict[str, str]:
    """sha256 of every file under ``roots`` (a symlink: its target's name), so "unchanged" is byte-exact."""
    hashes = {}
    for root in roots:
        paths = [root] if not root.is_dir() or root.is_symlink() else \
            [Path(d) / f for d, _, files in os.walk(root) for f in files]
        for path in paths:
            if skip(path):
                continue
            if path.is_symlink():
                hashes[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def folders(root: Path) -> set[Path]:
    return {Path(d) for d, _, _ in os.walk(root)}


def empty_folders(root: Path, before: set[Path]) -> list[Path]:
    """Folders under ``root`` that are new since ``before`` and hold no file at any depth."""
    return sorted(d for d in folders(root) - before if not any(files for _, _, files in os.walk(d)))


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.lstrip().startswith("✘")]


@dataclasses.dataclass
class Expect:
    """What a hostile case must leave: run ``case.run(bra, *argv)`` after making inputs, then it checks."""

    bra: Callable
    tmp_path: Path
    inputs: tuple[Path, ...]
    markers: tuple[Path, ...]
    before: dict[str, str] = dataclasses.field(default_factory=dict)
    folders_before: set[Path] = dataclasses.field(default_factory=set)

    def __post_init__(self) -> None:
        self.before = tree_hashes(*self.inputs)
        self.folders_before = folders(self.tmp_path)

    def run(self, *argv: Any, code: int, says: Iterable[str] = ()):
        outcome = self.bra(*argv)
        everything = outcome.out + outcome.err
        assert outcome.code == code, f"exit {outcome.code}, expected {code}\n{everything[-3000:]}"
        assert "Traceback" not in everything and "internal error" not in everything, everything[-3000:]
        lines = error_lines(outcome.err)
        if code == 0:
            assert lines == [], outcome.err
        else:
            assert len(lines) == 1, f"expected one ✘ line on stderr:\n{outcome.err}"
            for words in says:
                assert words in lines[0], f"{words!r} not in {lines[0]!r}"
        self.untouched()
        return outcome

    def untouched(self) -> None:
        ran = [m for marker in self.markers for m in markers_of(marker) if m.exists()]
        assert not ran, f"the payload ran: {ran}"
        assert tree_hashes(*self.inputs) == self.before, "an input file changed"
        assert empty_folders(self.tmp_path, self.folders_before) == [], "an empty folder was left behind"


@pytest.fixture
def expect(bra, tmp_path) -> Callable[..., Expect]:
    """``expect(inputs=[...], markers=[...])`` snapshots the inputs; ``.run(*argv, code=, says=)`` checks."""

    def make(inputs: Iterable[Path] = (), markers: Iterable[Path] = ()) -> Expect:
        return Expect(bra, tmp_path, tuple(inputs), tuple(markers))

    return make


@pytest.fixture
def marker(tmp_path) -> Path:
    """Where a payload would write; it must never appear (the folder holds nothing else)."""
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder / "PAYLOAD-RAN"


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """A folder nobody can write into — root included (``chattr +i``); skips where neither works."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    immutable = False
    if os.access(folder, os.W_OK) or _writable(folder):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        if _writable(folder):
            pytest.skip("no way to make a read-only folder here (root without chattr)")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)


def _writable(folder: Path) -> bool:
    probe = folder / ".write-probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


@pytest.fixture(scope="session")
def kit() -> Any:
    """The suite's helpers, for its test modules (conftest is not importable from them)."""
    import types

    return types.SimpleNamespace(write_pickle=write_pickle, write_label_cache_payload=write_label_cache_payload,
                                 write_marker_code=write_marker_code, read_only=read_only, tree_hashes=tree_hashes,
                                 HOSTILE_LABELS=HOSTILE_LABELS,
                                 ENV_SET_BY_BRACLI=ENV_SET_BY_BRACLI)
