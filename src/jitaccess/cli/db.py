"""``jitaccess db``: the database schema."""

from __future__ import annotations

import typer

from jitaccess.cli.context import container
from jitaccess.cli.output import out

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the newest version."""
    with container() as c:
        out.print(f"Database at the newest schema ({c.db.dialect}).")
