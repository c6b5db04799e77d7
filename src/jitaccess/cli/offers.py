"""``jitaccess offers``: the publishers' offers (managed application definitions)."""

from __future__ import annotations

from typing import Annotated

import typer

from jitaccess.cli.context import container, now
from jitaccess.cli.output import Table, emit_json, out
from jitaccess.cli.params import Json, parse_provider_config

app = typer.Typer(
    help="Publishers' offers (managed application definitions).", no_args_is_help=True
)


@app.command("register")
def offers_register(
    name: Annotated[str, typer.Argument(metavar="OFFER")],
    publisher: Annotated[list[str], typer.Option(help="Publisher's Slack user ID (repeat)")],
    role: Annotated[list[str] | None, typer.Option(help="Eligible role (repeat)")] = None,
    standing_role: Annotated[str, typer.Option(help="Always-on role")] = "Reader",
    jit_available: Annotated[
        bool, typer.Option("--jit-available/--no-jit-available", help="Offer JIT access")
    ] = True,
    provider_config: Annotated[
        str | None,
        typer.Option(help="Settings deployments inherit (e.g. Azure principals), JSON or @FILE"),
    ] = None,
    as_json: Json = False,
) -> None:
    """Register a publisher's offer (its managed application definition)."""
    from jitaccess.app.catalog import OfferSpec
    from jitaccess.domain.policy import DEFAULT_ROLES

    spec = OfferSpec(
        name=name,
        publishers=tuple(publisher),
        roles=tuple(role or DEFAULT_ROLES),
        standing_role=standing_role,
        jit_available=jit_available,
        provider_config=parse_provider_config(provider_config),
    )
    with container() as c:
        view = c.service.catalog.register_offer(spec, actor="cli", now=now())
    if as_json:
        emit_json(view.to_json())
    else:
        out.print(
            f"Registered offer {view.name} (JIT "
            f"{'available' if view.jit_available else 'not available'})."
        )


@app.command("list")
def offers_list(as_json: Json = False) -> None:
    """List the offers."""

    with container() as c:
        views = c.service.catalog.list_offers()
    if as_json:
        emit_json([v.to_json() for v in views])
        return
    table = Table("Offer", "JIT", "Publishers", "Eligible roles", "Standing role")
    for v in views:
        table.add_row(
            v.name,
            "available" if v.jit_available else "not available",
            ", ".join(v.publishers),
            ", ".join(v.eligible_roles),
            v.standing_role,
        )
    out.print(table if views else "No offers yet: `jitaccess offers register --help`.")


@app.command("show")
def offers_show(
    name: Annotated[str, typer.Argument(metavar="OFFER")], as_json: Json = False
) -> None:
    """Show one offer."""

    with container() as c:
        view = c.service.catalog.get_offer(name)
    if as_json:
        emit_json(view.to_json())
        return
    table = Table(show_header=False)
    for key, value in (
        ("Offer", view.name),
        ("JIT", "available" if view.jit_available else "not available"),
        ("Publishers", ", ".join(view.publishers)),
        ("Eligible roles", ", ".join(view.eligible_roles)),
        ("Standing role", view.standing_role),
    ):
        table.add_row(key, value)
    out.print(table)
