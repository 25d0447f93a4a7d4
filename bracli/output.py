"""One output object for every command: rich text for people, or JSON for scripts, drawn one way.

``Output(json_to, force)`` is made once per command. Human output goes to stdout, or to stderr when
``--json -`` puts the JSON on stdout (so stdout stays pure JSON; ultralytics' own log lines are moved to
stderr as well while a library call runs). ✔ / ⚠ / ✘ / ℹ are drawn by ``MARKS`` and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MARKS = {"ok": "[green]✔[/]", "warning": "[yellow]⚠[/]", "error": "[bold red]✘[/]", "info": "[blue]ℹ[/]"}

# soft_wrap: long paths stay on one line (copyable); tables still fit the terminal width
stdout_console = Console(highlight=False, soft_wrap=True)
stderr_console = Console(stderr=True, highlight=False, soft_wrap=True)


class Result(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def error(message: str) -> None:
    """The one-line failure message (the CLI's exception mapping prints every error through this)."""
    plain = _ANSI.sub("", str(message))  # ultralytics colours the prefixes of its own messages
    one_line = " — ".join(line.strip() for line in plain.strip().splitlines() if line.strip())
    stderr_console.print(f"{MARKS['error']} [bold red]error:[/] {_escape(one_line)}", soft_wrap=True)


class Output:
    """Where a command's messages, tables and JSON go."""

    def __init__(self, json_to: str | Path | None = None, *, force: bool = False) -> None:
        self.json_to = None if json_to is None else str(json_to)
        self.force = force
        self.json_on_stdout = self.json_to == "-"
        self.console = stderr_console if self.json_on_stdout else stdout_console
        if self.json_to and not self.json_on_stdout:  # before any work: never overwrite without --force
            from bracli.files import check_writable

            check_writable(Path(self.json_to), force)

    def ok(self, message: str) -> None:
        self.console.print(f"{MARKS['ok']} {_escape(message)}", soft_wrap=True)

    def warn(self, message: str) -> None:
        stderr_console.print(f"{MARKS['warning']} [yellow]{_escape(message)}[/]", soft_wrap=True)

    def info(self, message: str) -> None:
        self.console.print(_escape(message), soft_wrap=True)

    def mark(self, kind: str, message: str) -> None:
        """A line starting with the mark of ``kind`` (ok, warning, error, info); ``message`` may hold markup."""
        self.console.print(f"  {MARKS[kind]} {message}", soft_wrap=True)

    def print(self, *renderables: Any) -> None:
        """Tables, rules and pre-formatted markup."""
        self.console.print(*renderables, soft_wrap=True)

    def wrote(self, path: str | Path, what: str = "") -> None:
        self.ok(f"wrote {what + ' ' if what else ''}{path}")

    def emit(self, result: Result | dict[str, Any]) -> None:
        """Write the JSON result, when one was asked for (after the human output)."""
        if not self.json_to:
            return
        payload = result if isinstance(result, dict) else result.to_dict()
        text = json.dumps(payload, indent=2, default=str) + "\n"
        if self.json_on_stdout:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        from bracli.files import atomic_write_text

        self.wrote(atomic_write_text(self.json_to, text, force=self.force), "JSON")

    @contextlib.contextmanager
    def library_output(self) -> Iterator[None]:
        """While a library runs: keep stdout for the JSON when it goes there (its prints go to stderr)."""
        if not self.json_on_stdout:
            yield
            return
        handlers = [h for h in _library_loggers() if getattr(h, "stream", None) is sys.stdout]
        for handler in handlers:
            handler.setStream(sys.stderr)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                yield
        finally:
            for handler in handlers:
                handler.setStream(sys.stdout)


def metrics_table(title: str, metrics: dict[str, float]):
    """One row of metrics under their names (train's and val's summary)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for name in metrics:
        table.add_column(name, justify="right")
    table.add_row(*(f"{v:.3f}" for v in metrics.values()))
    return table


def _library_loggers() -> list[logging.StreamHandler]:
    handlers = []
    for name in ("ultralytics",):
        handlers += [h for h in logging.getLogger(name).handlers if isinstance(h, logging.StreamHandler)]
    return handlers


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(str(text))
