"""``jitaccess audit``: verify the hash-chained audit log (against heads recorded
elsewhere) and export it."""

from __future__ import annotations

import csv
import json
import re
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from jitaccess.cli import output as cli_output
from jitaccess.cli.context import container
from jitaccess.cli.output import EXIT_REFUSED, err, out
from jitaccess.terminal import visible

app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


_HEAD = re.compile(r"^(\d{1,12}):([0-9a-fA-F]{64})$")


def _anchor(value: str) -> tuple[int, str]:
    match = _HEAD.match(value.strip())
    if match is None:
        raise typer.BadParameter(
            f"'{value}' is not SEQ:HASH: give a head as `audit verify` prints it or the "
            "audit_head log line has it (e.g. 42:3f5a…, the hash in full, 64 hex digits)"
        )
    return int(match.group(1)), match.group(2).lower()


@app.command("verify")
def audit_verify(
    expect: Annotated[
        list[str] | None,
        typer.Option(
            "--expect",
            metavar="SEQ:HASH",
            help="A head recorded earlier (off this box) that the log must still contain; "
            "repeatable",
        ),
    ] = None,
) -> None:
    """Check the hash chain, the heads recorded elsewhere, and that every request keeps
    its entries; exit 1 naming each problem. Prints the head to record as SEQ:HASH."""
    from jitaccess.app.audit_log import verify

    anchors = [_anchor(value) for value in expect or []]
    with container() as c:
        result = verify(c.db, anchors)
    if result.problems:
        err.print(f"[red]Audit log tampered with[/red] ({result.entries} entries read):")
        for problem in result.problems:
            err.print(f"  - {problem}", highlight=False)
        err.print(f"Head now: {result.head}", highlight=False)
        raise typer.Exit(EXIT_REFUSED)
    checked = f"; contains {', '.join(f'{s}:{h[:12]}…' for s, h in anchors)}" if anchors else ""
    out.print(f"Audit log intact: {result.entries} entries{checked}", highlight=False)
    out.print(f"Head: {result.head}", highlight=False, soft_wrap=True)


@app.command("export")
def audit_export(
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="jsonl or csv")
    ] = ExportFormat.jsonl,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File; default stdout")
    ] = None,
) -> None:
    """Write the whole audit log."""
    from jitaccess.app.audit_log import csv_cell, export_rows

    with container() as c:
        try:
            handle = output.open("w", newline="") if output else sys.stdout
        except OSError as exc:
            raise typer.BadParameter(f"cannot write {output}: {exc.strerror}") from None
        try:
            count = 0
            # A terminal gets control and bidi characters escaped; a file or a pipe gets
            # the exact data. JSON escapes them all by itself, except DEL.
            terminal = output is None and cli_output.stdout_is_terminal()
            if fmt is ExportFormat.jsonl:
                for row in export_rows(c.db):
                    line = json.dumps(row, default=str)
                    handle.write((line.replace("\x7f", "\\u007f") if terminal else line) + "\n")
                    count += 1
            else:
                writer: Any = None
                for row in export_rows(c.db):
                    flat = {**row, "details": json.dumps(row["details"], default=str)}
                    # Every cell that a spreadsheet would run as a formula is neutralised
                    # (csv_cell); None stays an empty cell.
                    flat = {k: v if v is None else csv_cell(str(v)) for k, v in flat.items()}
                    if terminal:
                        flat = {k: v if v is None else visible(v) for k, v in flat.items()}
                    if writer is None:
                        writer = csv.DictWriter(
                            handle, fieldnames=list(flat), quoting=csv.QUOTE_ALL
                        )
                        writer.writeheader()
                    writer.writerow(flat)
                    count += 1
        finally:
            if output:
                handle.close()
    if output:
        out.print(f"Wrote {count} entries to {output}.")
