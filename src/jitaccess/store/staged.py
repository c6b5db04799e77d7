"""Rows written in bulk when the transaction commits.

A transition writes one request update, one audit entry and several outbox rows. As
ORM objects each of those is a unit-of-work item to track and flush one at a time,
and in a sweep batch of 500 that bookkeeping was half the time. Append-only rows that
nothing reads back inside the transaction (audit entries, outbox messages) are staged
here instead and inserted just before commit, one executemany per table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from jitaccess.store.models import Base

_KEY = "jit_staged_inserts"


def stage(session: Session, model: type[Base], row: dict[str, Any]) -> None:
    """INSERT ``row`` into ``model``'s table when ``session`` commits. Rows of one
    table must carry the same keys (one executemany)."""
    session.info.setdefault(_KEY, {}).setdefault(model, []).append(row)


def insert_staged(session: Session) -> None:
    """Before commit: insert every staged row, table by table in staging order."""
    staged: dict[type[Base], list[dict[str, Any]]] | None = session.info.pop(_KEY, None)
    if not staged:
        return
    for model, rows in staged.items():
        # Core, not the ORM's bulk insert: these rows need no identity map or events.
        table = model.__table__
        assert isinstance(table, Table)
        session.connection().execute(insert(table), rows)
