"""Rendering of `utrace doctor`."""

from __future__ import annotations

from typing import TextIO

from utrace.app.checks import Check


def write_checks(checks: list[Check], out: TextIO) -> None:
    from rich.console import Console

    from utrace.output.escape import markup as escape  # details quote paths and kernel strings

    console = Console(file=out, highlight=False)
    for c in checks:
        mark = "[green]ok  [/green]" if c.ok else "[red]FAIL[/red]"
        console.print(f"{mark} {escape(c.name)}: {escape(c.detail)}")
        if not c.ok and c.fix:
            console.print(f"     [yellow]fix:[/yellow] {escape(c.fix)}")
    bad = [c for c in checks if not c.ok]
    if bad:
        console.print(f"[red]{len(bad)} problem(s): tracing will not work until they are fixed[/red]")
    else:
        console.print("[green]tracing will work here[/green]")
