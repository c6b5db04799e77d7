"""``jitaccess signins``: people's Microsoft sign-ins (native mode and require_mfa).

Refresh tokens are stored encrypted with ``JITACCESS_TOKEN_KEYS``; these commands make
a key, rotate the stored tokens to the first key, list who is linked (never a token),
and revoke a person's link."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from jitaccess.cli.context import container, now
from jitaccess.cli.output import EXIT_REFUSED, Table, err, fmt_time, out
from jitaccess.cli.params import AsUser, Utc

app = typer.Typer(help="Sign in with Microsoft: keys and people's links.", no_args_is_help=True)


@app.command("new-key")
def new_key() -> None:
    """Print a new key for JITACCESS_TOKEN_KEYS (put it first to rotate)."""
    from jitaccess.app.signins import TokenCipher

    out.print(TokenCipher.new_key(), highlight=False)


@app.command("rotate-key")
def rotate_key() -> None:
    """Re-encrypt every stored sign-in with the first key of JITACCESS_TOKEN_KEYS; the
    older keys can then be removed."""
    with container() as c:
        count = c.service.signins.rotate_keys()
    out.print(f"Re-encrypted {count} stored sign-ins with the first key.")


@app.command("list")
def list_links(utc: Utc = False) -> None:
    """Who is linked to which Microsoft account (never a token)."""
    with container() as c:
        links = c.service.signins.links()
    if not links:
        out.print("Nobody has signed in with Microsoft yet.")
        return
    table = Table("Slack user", "Microsoft account", "Object id", "MFA contexts", "Step-up at")
    for link in links:
        table.add_row(
            link.slack_user,
            escape(link.username),
            link.object_id,
            ", ".join(link.acrs) or "-",
            fmt_time(link.authenticated_at) or "-",
        )
    out.print(table)


@app.command("revoke")
def revoke(
    user: Annotated[str, typer.Argument(help="The Slack user whose link to forget (U…)")],
    as_user: AsUser,
) -> None:
    """Forget a person's Microsoft sign-in (themselves, or a consumer admin)."""
    from jitaccess.cli.params import as_person

    person = as_person(user) or user
    with container() as c:
        gone = c.service.revoke_sign_in(person, actor=as_user, now=now())
    if not gone:
        err.print(f"{escape(person)} has no Microsoft sign-in; nothing changed.")
        raise typer.Exit(EXIT_REFUSED)
    out.print(f"Forgot {escape(person)}'s Microsoft sign-in.")
