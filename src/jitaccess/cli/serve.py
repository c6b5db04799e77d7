"""``jitaccess serve``: run the service (all of it, or one side with ``--role``), or the
sandbox with ``--sandbox``."""

from __future__ import annotations

from typing import Annotated

import typer

from jitaccess.cli.context import end_gc_pause
from jitaccess.cli.output import EXIT_REFUSED, EXIT_USAGE, err, print_lines
from jitaccess.roles import Role


def serve(
    role: Annotated[
        Role | None,
        typer.Option(
            "--role",
            help="web: answer Slack only; worker: sweep, relay and reconcile only; all: "
            "both (default: JITACCESS_ROLE, else all)",
            case_sensitive=False,
        ),
    ] = None,
    sandbox: Annotated[
        bool,
        typer.Option(
            "--sandbox",
            help="Try it with no Slack workspace: a local Slack stand-in in the browser",
        ),
    ] = False,
    sandbox_reset: Annotated[
        bool,
        typer.Option("--sandbox-reset", help="With --sandbox: start over with fresh demo data"),
    ] = False,
) -> None:
    """Run the service: Slack app, deadline scheduler, notification relay, reconciliation
    (all of them, or one side with --role web|worker)."""
    from jitaccess.server import ConfigurationError, run
    from jitaccess.settings import SettingsError

    end_gc_pause()

    try:
        if sandbox or sandbox_reset:
            if role not in (None, Role.ALL):
                err.print("--sandbox is one process: it takes no --role", highlight=False)
                raise typer.Exit(EXIT_USAGE)
            from jitaccess.sandbox.run import run_sandbox

            run_sandbox(reset=sandbox_reset)
            return
        from jitaccess.settings import load_settings

        settings = load_settings()
        if role is not None:
            settings = settings.model_copy(update={"role": role})
        run(settings)
    except SettingsError as exc:
        print_lines(exc.lines)
        raise typer.Exit(EXIT_USAGE) from None
    except ConfigurationError as exc:
        # Our message's own line breaks stay line breaks; what it quotes from outside
        # (a path, a lock file's content) was made visible where it was written.
        print_lines(str(exc).split("\n"))
        raise typer.Exit(EXIT_REFUSED) from None
