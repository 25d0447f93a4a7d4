"""The `bra` command line: a thin Typer layer over the library.

Commands live in ``bracli/commands/``; each imports torch/ultralytics inside its function body so
that ``bra --help`` never pays for them. ``main`` is the one place that turns exceptions into a
one-line message and an exit code (1 = failed / problems found, 2 = usage, 130 = interrupted).
"""

from __future__ import annotations

import errno
import os
import sys

import typer

from bracli import __version__
from bracli.commands import ablate, dataset, demo, export, init, migrate, predict, profile, train, val
from bracli.errors import BracliError, out_of_memory

app = typer.Typer(
    name="bra",
    help="YOLO + BiFormer's Bi-Level Routing Attention, from dataset to deployment. Offline and private.",
    epilog="Start with: [bold]bra demo[/] — or [bold]bra init --scale n --bra-after p3[/]. "
    "Set BRA_DEBUG=1 for full tracebacks.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
INTERRUPTED = 130


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bra {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """YOLO + BiFormer's Bi-Level Routing Attention, from dataset to deployment."""


for module in (init, train, val, predict, export, migrate, profile, ablate, demo):
    app.command(module.NAME, epilog=module.EPILOG)(module.command)
app.add_typer(dataset.app, name="dataset")

# Ordinary environment problems, named by what the user sees (not bugs, not "internal error").
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "file not found",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOTDIR: "not a folder",
    errno.EMFILE: "too many open files",
}


def _describe(exc: BaseException) -> tuple[str, int] | None:
    """Map exceptions a user can cause to (message, exit code); None means it is a bug."""
    if isinstance(exc, BracliError):
        return str(exc), exc.exit_code
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"missing dependency: the Python package '{exc.name}' is not installed", 1
    if (no_memory := out_of_memory(exc)) is not None:
        return str(no_memory), no_memory.exit_code
    if isinstance(exc, OSError) and exc.errno in _OS_ERRORS:
        where = exc.filename or ""
        return f"{_OS_ERRORS[exc.errno]}{': ' + str(where) if where else ''}", 1
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}{': ' + str(exc.filename) if exc.filename else ''}", 1
    if isinstance(exc, FileNotFoundError) and str(exc).strip():  # a library's own message, e.g. a dataset split
        return str(exc), 1
    return None


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    from bracli.output import error

    debug = os.environ.get("BRA_DEBUG", "") not in ("", "0")
    try:
        # standalone_mode=False: usage errors come back here and are printed as one line like every other error
        code = app(args=argv, prog_name="bra", standalone_mode=False)
    except KeyboardInterrupt:
        code = INTERRUPTED
    except typer.Abort:
        error("aborted")
        sys.exit(1)
    except _CLICK_ERROR as exc:
        if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help already
            error(_usage_line(exc))
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        described = _describe(exc)
        if described is None:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            error(f"internal error: {type(exc).__name__}: {first} — rerun with BRA_DEBUG=1 for the traceback "
                  "and report it")
            sys.exit(1)
        message, code = described
        error(message)
        sys.exit(code)
    if code == INTERRUPTED:
        error("interrupted")
    sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode does, success included


# Typer raises click's errors (vendored as typer._click since typer 0.17); reach the class through a public name.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _usage_line(exc: Exception) -> str:
    """A command-line mistake in one line, with where to read the usage."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
    return f"{exc.format_message()}{where}"

if __name__ == "__main__":
    main()
