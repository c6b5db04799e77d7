"""``jitaccess serve``: run the service (all of it, or one side with ``--role``), or the
sandbox with ``--sandbox``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Annotated

import typer

from jitaccess.cli.context import end_gc_pause
from jitaccess.cli.output import EXIT_REFUSED, EXIT_USAGE, err, print_lines
from jitaccess.roles import Role

#: The sandbox is its own distribution (``sandbox/`` in the repository); the product wheel
#: and the image do not contain it, so it is looked up only when asked for.
SANDBOX_MODULE = "jitaccess_sandbox.run"
SANDBOX_INSTALL = "pip install -e sandbox"


def _sandbox_runner() -> Callable[..., None]:
    """``run_sandbox`` from the installed sandbox, or exit 2 with one line naming the
    install command when it is not installed (a product-only install, the image)."""
    try:
        module = importlib.import_module(SANDBOX_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name is None or SANDBOX_MODULE.split(".")[0] != exc.name.split(".")[0]:
            raise
        err.print(
            "--sandbox needs the sandbox, which is not installed: run `make run`, or "
            f"`{SANDBOX_INSTALL}` from the repository",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_USAGE) from None
    runner: Callable[..., None] = module.run_sandbox
    return runner


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
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            metavar="PORT",
            min=1,
            max=65535,
            help="Listen on this port (default: JITACCESS_PORT, else 3000)",
        ),
    ] = None,
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
            _sandbox_runner()(reset=sandbox_reset, port=port)
            return
        from jitaccess.settings import load_settings

        settings = load_settings()
        if role is not None:
            settings = settings.model_copy(update={"role": role})
        if port is not None:
            settings = settings.model_copy(update={"port": port})
        run(settings)
    except SettingsError as exc:
        print_lines(exc.lines)
        raise typer.Exit(EXIT_USAGE) from None
    except ConfigurationError as exc:
        # Our message's own line breaks stay line breaks; what it quotes from outside
        # (a path, a lock file's content) was made visible where it was written.
        print_lines(str(exc).split("\n"))
        raise typer.Exit(EXIT_REFUSED) from None
