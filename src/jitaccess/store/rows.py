"""Every read and lock of requests and applications the use cases and the sweep need.

Row locks differ by database: PostgreSQL locks with ``FOR UPDATE`` (``SKIP LOCKED``
for the sweep); SQLite serialises writers itself (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from jitaccess.domain.errors import NotFound
from jitaccess.domain.lifecycle import FINAL_STATES, RequestState
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, Application

#: Request ids are 32-bit integers in the database; larger numbers name nothing.
MAX_ID = 2**31
#: A batch's rows load their applications with one more query, not joined into every
#: row: joined, each row re-decoded its application's JSON columns.
_APPS_ONCE = selectinload(AccessRequest.app)


class Rows:
    """Reads and locks on one database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def find_app(session: Session, name: str, *, removed: bool = False) -> Application | None:
        query = select(Application).where(Application.name == name.strip())
        if not removed:
            query = query.where(Application.removed_at.is_(None))
        return session.execute(query).scalar_one_or_none()

    def app(self, session: Session, name: str, *, include_removed: bool = False) -> Application:
        row = self.find_app(session, name, removed=include_removed)
        if row is None:
            raise NotFound(f"No application named '{name}': see `jitaccess apps list`")
        return row

    @staticmethod
    def get(session: Session, request_id: int) -> AccessRequest:
        if not 0 < request_id < MAX_ID:
            raise NotFound(f"No request {request_id}")
        row = session.get(AccessRequest, request_id)
        if row is None:
            raise NotFound(f"No request {request_id}")
        return row

    def lock_many(self, session: Session, ids: list[int]) -> dict[int, AccessRequest]:
        """Re-read (and on PostgreSQL lock) a batch of rows in one query, in id order."""
        query = (
            select(AccessRequest)
            .where(AccessRequest.id.in_(ids))
            .order_by(AccessRequest.id)
            .options(_APPS_ONCE)
        )
        if self.db.is_postgres:
            query = query.with_for_update(of=AccessRequest)
        return {row.id: row for row in session.execute(query).unique().scalars()}

    def lock(self, session: Session, request_id: int) -> AccessRequest:
        if not 0 < request_id < MAX_ID:
            raise NotFound(f"No request {request_id}")
        query = select(AccessRequest).where(AccessRequest.id == request_id)
        if self.db.is_postgres:
            query = query.with_for_update(of=AccessRequest)
        row = session.execute(query).unique().scalar_one_or_none()
        if row is None:
            raise NotFound(f"No request {request_id}")
        return row

    def due(
        self,
        session: Session,
        now: datetime,
        limit: int,
        ids: list[int] | None,
        *,
        wait_for_locks: bool = False,
    ) -> list[AccessRequest]:
        rows: list[AccessRequest] = []
        # Overdue expiries first; revokes owed by ended requests last.
        for state in (
            RequestState.ACTIVE,
            RequestState.PENDING,
            RequestState.APPROVED,
            RequestState.AUTO_APPROVED,
            *sorted(FINAL_STATES),
        ):
            if len(rows) >= limit:
                break
            query = (
                select(AccessRequest)
                .where(AccessRequest.state == state.value, AccessRequest.next_deadline_at <= now)
                .order_by(AccessRequest.next_deadline_at)
                .limit(limit - len(rows))
                .options(_APPS_ONCE)
            )
            if ids is not None:
                query = query.where(AccessRequest.id.in_(ids))
            if self.db.is_postgres:
                # A person's action waits for a racing sweeper's lock (it is short) so
                # what it made due happens now; the sweep skips locked rows.
                query = query.with_for_update(skip_locked=not wait_for_locks, of=AccessRequest)
            rows.extend(session.execute(query).unique().scalars())
        return rows
