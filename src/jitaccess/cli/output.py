"""Everything the CLI prints, and how it ends.

Human output goes through :data:`out` and :data:`err` (and :class:`Table`), which show
people's text (reasons, names, backend errors) with control and bidi characters as
visible escapes; ``--json`` output is written by :func:`emit_json`, which escapes them
by itself. Exit codes: 0 done, :data:`EXIT_REFUSED` (1) refused by a rule or something
differs, :data:`EXIT_USAGE` (2) usage error (Typer's own for bad options).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from typing import Any, NoReturn

import typer
from rich.console import Console as RichConsole
from rich.markup import escape
from rich.table import Table as RichTable

from jitaccess.terminal import visible

EXIT_REFUSED = 1
EXIT_USAGE = 2


class Console(RichConsole):
    """Prints people's text (reasons, names, backend errors) with control and bidi
    characters shown as escapes: the one door to the terminal for human output."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(visible(o) if isinstance(o, str) else o for o in objects), **kwargs)


class Table(RichTable):
    """A table whose cells go through :func:`visible`, like everything else printed."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(visible(r) if isinstance(r, str) else r for r in renderables), **kwargs)


out = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True)


def refuse(message: str) -> NoReturn:
    """A rule said no: the reason on stderr, exit 1, nothing changed."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(EXIT_REFUSED) from None


def print_lines(lines: list[str]) -> None:
    """A message of several lines on stderr, one print per line: the line breaks are
    ours and stay line breaks, while a control character inside a line (from what
    people or files supplied) is still shown as an escape."""
    for line in lines:
        err.print(line, markup=False, highlight=False)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def fmt_time(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")
