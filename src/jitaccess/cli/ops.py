"""The top-level operations: ``jitaccess sweep`` (run what is due now), ``reconcile``
(backends against the database) and ``diagram`` (the request lifecycle)."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from jitaccess.cli.context import container, now
from jitaccess.cli.output import EXIT_REFUSED, emit_json, err, out
from jitaccess.cli.params import Json


class DiagramFormat(StrEnum):
    mermaid = "mermaid"
    svg = "svg"
    png = "png"


def sweep() -> None:
    """Run every transition that is due now, once, and deliver the notifications to
    Slack when Slack is configured (else they wait for `serve`)."""
    with container() as c:
        report = c.service.sweep(now())
        relayed = c.relay.drain(now())
    if c.relay.notifier is None:
        delivery = (
            f"{relayed.held} notifications left for serve to deliver (no SLACK_BOT_TOKEN here)"
        )
    else:
        delivery = f"notifications delivered to Slack {relayed.delivered}"
        if relayed.failed:
            delivery += f", {relayed.failed} failed (retried later)"
        if relayed.dropped:
            delivery += f", {relayed.dropped} undeliverable"
    out.print(
        f"activated {report.activated}, expired {report.expired}, revoked {report.revoked}, "
        f"cancelled {report.cancelled}, timed out {report.timed_out}, failed {report.failed}, "
        f"lapsed {report.lapsed}, retrying {report.retrying}; {delivery}"
    )


def reconcile_command(
    app_name: Annotated[str | None, typer.Option("--app", help="Only this application")] = None,
    fix: Annotated[bool, typer.Option("--fix", help="Revoke orphans, re-grant missing")] = False,
    as_json: Json = False,
) -> None:
    """Compare what each backend holds with the database; exit 1 if anything differs."""
    from jitaccess.app.reconcile import reconcile

    with container() as c:
        findings = reconcile(
            c.service,
            now(),
            db=c.db,
            providers=c.providers,
            app=app_name,
            fix=fix,
            actor="cli:reconcile",
        )
    if as_json:
        emit_json([vars(f) for f in findings])
    else:
        for finding in findings:
            out.print(finding.line())
        differences = [f for f in findings if f.kind != "skipped"]
        if not differences:
            out.print("Backends and database agree.")
    unresolved = [f for f in findings if f.kind != "skipped" and not f.fixed]
    if unresolved:
        raise typer.Exit(EXIT_REFUSED)


def diagram(
    fmt: Annotated[DiagramFormat, typer.Option("--format")] = DiagramFormat.mermaid,
    output: Annotated[Path | None, typer.Option("-o", "--output")] = None,
) -> None:
    """Draw the request lifecycle from the state machine itself."""
    from jitaccess.domain.lifecycle import RequestLifecycle, mermaid

    if fmt is DiagramFormat.mermaid:
        text = mermaid()
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text)
        return
    from statemachine.contrib.diagram import DotGraphMachine
    from statemachine.contrib.diagram.graphviz import GraphvizError, run_graphviz

    graph = DotGraphMachine(RequestLifecycle).get_graph()  # type: ignore[no-untyped-call]
    source = str(graph.to_string())
    try:
        image = run_graphviz(source, fmt.value)
    except GraphvizError as exc:
        err.print(
            f"[red]error:[/red] {fmt.value} needs Graphviz's `dot` program "
            f"(apt-get install graphviz), or use --format mermaid ({escape(str(exc))})"
        )
        raise typer.Exit(EXIT_REFUSED) from None
    if output:
        output.write_bytes(image)
    else:
        sys.stdout.buffer.write(image)
