"""The owed activity summaries as a queue: claim the due ones, lock one to record it.

PostgreSQL locks with ``FOR UPDATE`` (``SKIP LOCKED`` when claiming, so sweepers share
the work); SQLite serialises writers itself.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from jitaccess.store.db import Database
from jitaccess.store.models import ActivityReport


def due(session: Session, db: Database, now: datetime, limit: int) -> list[ActivityReport]:
    """Summaries due at ``now``, soonest first (never one another sweeper holds)."""
    query = (
        select(ActivityReport)
        .where(ActivityReport.due_at <= now)
        .order_by(ActivityReport.due_at)
        .limit(limit)
    )
    if db.is_postgres:
        query = query.with_for_update(skip_locked=True)
    return list(session.execute(query).scalars())


def lock(session: Session, db: Database, request_id: int) -> ActivityReport:
    """The summary owed for the request, locked (PostgreSQL)."""
    query = select(ActivityReport).where(ActivityReport.request_id == request_id)
    if db.is_postgres:
        query = query.with_for_update()
    return session.execute(query).scalar_one()
