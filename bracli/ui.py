"""Rich output shared by the commands: one console per stream and the one-line message styles."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def error(message: str) -> None:
    err_console.print(f"[bold red]✘ error:[/] {message}", soft_wrap=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]⚠ {message}[/]", soft_wrap=True)


def success(message: str) -> None:
    console.print(f"[green]✔[/] {message}", soft_wrap=True)


def info(message: str) -> None:
    console.print(message, soft_wrap=True)
