"""Run folders: where runs go, finding the newest weights or an unfinished run, and tidying up after a failure.

A run that fails before it produced anything leaves no folder behind: ultralytics creates the run folder
(and writes ``args.yaml``) before it has done any work, so a failed start would otherwise leave an empty
``train-7`` for the user to wonder about.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from bracli.errors import BracliError, UsageError

BOOKKEEPING = frozenset({"args.yaml", "bracli.yaml"})  # written before any work; alone they are not a result
MODEL_SUFFIXES = (".yaml", ".yml")  # the rendered model bracli copies into the run folder at the start


def project_dir(project: str | Path | None, task: str = "detect") -> Path:
    """Runs go to ./runs/<task> of the working directory (ultralytics' own default moves with its settings)."""
    return Path(project).expanduser().resolve() if project else Path.cwd() / "runs" / task


def newest(pattern: Path) -> Path | None:
    found = glob.glob(str(pattern), recursive=True)
    return Path(max(found, key=os.path.getmtime)) if found else None


def newest_weights(project: str | Path | None, task: str = "detect") -> Path:
    """The most recently written best.pt under the project folder."""
    root = project_dir(project, task)
    found = newest(root / "**" / "weights" / "best.pt")
    if found is None:
        raise UsageError(f"no trained weights under {root}; pass --model PATH/TO/best.pt or run bra train first")
    return found


def resume_target(resume: str | Path | bool, project: str | Path | None, task: str = "detect") -> Path:
    """The checkpoint to resume: a given file or run folder, or the newest last.pt under the project folder."""
    if resume is True or str(resume) == "latest":
        root = project_dir(project, task)
        found = newest(root / "**" / "weights" / "last.pt")
        if found is None:
            raise BracliError(f"no run to resume under {root}; pass --resume PATH/TO/last.pt")
        return found
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = path / "weights" / "last.pt"
    if not path.is_file():
        raise BracliError(f"checkpoint to resume not found: {path}")
    return path


def holds_results(folder: Path) -> bool:
    """Anything in the folder besides bookkeeping written at the start (and empty sub-folders)."""
    for root, _, files in os.walk(folder):
        for name in files:
            at_top = Path(root) == folder
            if not (at_top and (name in BOOKKEEPING or name.endswith(MODEL_SUFFIXES))):
                return True
    return False


def discard_if_empty(folder: Path | None, created: list[Path] | tuple[Path, ...] = ()) -> None:
    """Remove a run folder that holds no results, and any of ``created`` (parents bracli made) left empty."""
    if folder is not None and folder.is_dir() and not holds_results(folder):
        shutil.rmtree(folder, ignore_errors=True)
    for parent in sorted(created, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):  # only when empty
            parent.rmdir()


@contextlib.contextmanager
def tidy_on_failure(root: Path) -> Iterator[None]:
    """On any failure inside, remove the run folders that appeared under ``root`` without results (and
    the parents of ``root`` that were made for them)."""
    created = missing_parents(root)
    before = set(root.iterdir()) if root.is_dir() else set()
    try:
        yield
    except BaseException:
        for folder in (set(root.iterdir()) if root.is_dir() else set()) - before:
            discard_if_empty(folder)
        discard_if_empty(None, created)
        raise


def missing_parents(path: Path) -> list[Path]:
    """The folders ``path`` would need created (so a failure can remove exactly those)."""
    missing = []
    for parent in [path, *path.parents]:
        if parent.exists():
            break
        missing.append(parent)
    return missing
