"""Rich output shared by the commands: one console per stream and the one-line message styles."""

from __future__ import annotations

from rich.console import Console

# soft_wrap: long paths stay on one line (copyable); tables still fit the terminal width
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    err_console.print(f"[bold red]✘ error:[/] {message}", soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]⚠ {message}[/]", soft_wrap=True)


def success(message: str) -> None:
    console.print(f"[green]✔[/] {message}", soft_wrap=True)


def info(message: str) -> None:
    console.print(message, soft_wrap=True)
