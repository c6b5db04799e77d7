"""The ``jitaccess`` command: the operators' and break-glass path.

It acts on behalf of a Slack user given with ``--as``, under the same rules as
Slack. Exit codes: 0 done, 1 refused by a rule (message on stderr, nothing
changed), 2 usage error.

This module only assembles the command from its groups (one module each: ``apps``,
``offers``, ``requests``, ``audit``, ``db``, ``serve`` and ``ops`` for sweep, reconcile
and diagram); what it prints and how it exits is in ``output``.
"""

from __future__ import annotations

import gc

import typer

# Only what `--help` needs is imported when the CLI loads (typer, rich, and the command
# modules, which import nothing heavier at their top): the service, the store, SQLAlchemy,
# the providers and their SDKs are imported inside the commands that use them, so
# `jitaccess --help` starts in a fraction of the time (bench/cli_start.py).
from jitaccess.cli import apps, audit, db, offers, ops, requests, signins
from jitaccess.cli import serve as serving
from jitaccess.cli.context import end_gc_pause
from jitaccess.cli.params import ConventionalGroup

app = typer.Typer(
    name="jitaccess",
    cls=ConventionalGroup,
    help="Just-in-time privileged access for managed applications, run from Slack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"jitaccess {version('jitaccess')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit", callback=_version, is_eager=True
    ),
) -> None:
    """Just-in-time privileged access for managed applications, run from Slack."""


app.add_typer(db.app, name="db")
app.add_typer(apps.app, name="apps")
app.add_typer(requests.app, name="requests")
app.add_typer(audit.app, name="audit")
app.add_typer(offers.app, name="offers")
app.add_typer(signins.app, name="signins")
app.command("sweep")(ops.sweep)
app.command("reconcile")(ops.reconcile_command)
app.command("diagram")(ops.diagram)
app.command("serve")(serving.serve)


def main() -> None:
    # Starting a command makes hundreds of thousands of objects that live as long as
    # the process (modules, classes, tables, the engine) and next to no garbage; the
    # cyclic GC would scan them over and over (about 7% of `apps list`). So it pauses
    # until the command's container is built (or serve starts), then gc.freeze() moves
    # those objects out of its sight and it runs as usual for the command's own work.
    gc.disable()
    try:
        app()
    finally:
        end_gc_pause()


__all__ = ["app", "main"]
