"""Everything the CLI prints, and how it ends.

Human output goes through :data:`out` and :data:`err` (and :class:`Table`), which show
people's text (reasons, names, backend errors) with control and bidi characters as
visible escapes; ``--json`` output is written by :func:`emit_json`, which escapes them
by itself. Exit codes: 0 done, :data:`EXIT_REFUSED` (1) refused by a rule or something
differs, :data:`EXIT_USAGE` (2) usage error (Typer's own for bad options).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console as RichConsole
from rich.markup import escape
from rich.table import Table as RichTable

from jitaccess.domain.errors import utc_text
from jitaccess.terminal import visible

EXIT_REFUSED = 1
EXIT_USAGE = 2


class Console(RichConsole):
    """Prints people's text (reasons, names, backend errors) with control and bidi
    characters shown as escapes: the one door to the terminal for human output."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(visible(o) if isinstance(o, str) else o for o in objects), **kwargs)


class Table(RichTable):
    """A table whose cells go through :func:`visible`, like everything else printed, and
    are never cut: on a narrow terminal a long cell (an Azure scope, a reason) wraps onto
    more lines instead of ending in "…", so what is printed can still be copied whole."""

    def add_row(self, *renderables: Any, **kwargs: Any) -> None:
        super().add_row(*(visible(r) if isinstance(r, str) else r for r in renderables), **kwargs)
        for column in self.columns:
            column.overflow = "fold"


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


# --- Times ---------------------------------------------------------------------------------
# Operators read times in their own zone, with its offset so that a time pasted into a
# ticket stays unambiguous (`2026-12-07 19:32 +01:00`); `--utc` prints UTC instead, and
# `--json` keeps ISO 8601 with its offset (`RequestView.to_json`).

_times_in_utc = False


def print_times_in_utc(flag: bool) -> None:
    """Set by each command's ``--utc`` (every time: it is off unless given)."""
    global _times_in_utc
    _times_in_utc = flag


def local_zone() -> tzinfo:
    """The operator's zone: ``TZ`` when it names an IANA zone, else the system's (which
    also covers a POSIX ``TZ`` string such as ``CET-1CEST``)."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            time.tzset()
    local = datetime.now().astimezone().tzinfo
    return local if local is not None else UTC


def _offset(value: datetime) -> str:
    minutes = int((value.utcoffset() or timedelta()).total_seconds()) // 60
    hours, rest = divmod(abs(minutes), 60)
    return f"{'-' if minutes < 0 else '+'}{hours:02d}:{rest:02d}"


def fmt_time(value: datetime | None) -> str:
    """A time as the operator reads it: local with its offset, or UTC with ``--utc``."""
    if value is None:
        return ""
    if value.tzinfo is None:  # the store keeps UTC
        value = value.replace(tzinfo=UTC)
    if _times_in_utc:
        return utc_text(value)
    local = value.astimezone(local_zone())
    return f"{local:%Y-%m-%d %H:%M} {_offset(local)}"


def message(error: Exception) -> str:
    """A refusal as the operator reads it: the times it names (``Moment`` parts) in their
    zone, as every other time the CLI prints, the rest as the service wrote it."""
    from jitaccess.domain.errors import JitError, Moment

    if not isinstance(error, JitError):
        return str(error)
    return "".join(fmt_time(p.at) if isinstance(p, Moment) else str(p) for p in error.parts)
