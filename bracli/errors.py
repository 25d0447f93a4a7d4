"""The exceptions bracli raises on purpose; the CLI maps each to a one-line message and an exit code."""

from __future__ import annotations


class BracliError(Exception):
    """Something the user can fix went wrong (bad file, failed run). Exit code 1."""

    exit_code = 1


class UsageError(BracliError):
    """The command line itself is wrong (bad option value, conflicting flags). Exit code 2."""

    exit_code = 2


class OutputExistsError(UsageError):
    """An output file exists and ``--force`` was not given; nothing was written."""

    def __init__(self, path: object) -> None:
        super().__init__(f"{path} already exists; pass --force to overwrite it")


class MissingDependencyError(BracliError):
    """An optional package a feature needs is not installed. bracli never installs packages itself."""

    def __init__(self, package: str, feature: str) -> None:
        super().__init__(f"{feature} needs the Python package '{package}', which is not installed "
                         f"(pip install {package})")
