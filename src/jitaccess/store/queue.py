"""The outbox as a queue: every read and lock the relay needs.

Rows are claimed by pushing ``available_at`` ahead by a lease (with ``SKIP LOCKED`` on
PostgreSQL, so replicas share the work), and settled once the relay is done.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from jitaccess.store.db import Database
from jitaccess.store.models import OutboxMessage


class OutboxQueue:
    def __init__(self, db: Database) -> None:
        self.db = db

    def due(self, session: Session, now: datetime, limit: int) -> list[OutboxMessage]:
        """Unsettled messages available at ``now``, oldest first (locked on PostgreSQL)."""
        query = (
            select(OutboxMessage)
            .where(OutboxMessage.settled_at.is_(None), OutboxMessage.available_at <= now)
            .order_by(OutboxMessage.available_at, OutboxMessage.id)
            .limit(limit)
        )
        if self.db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        return list(session.execute(query).scalars())

    def due_of(
        self,
        session: Session,
        now: datetime,
        kinds: Collection[str],
        request_ids: Collection[int],
    ) -> list[OutboxMessage]:
        """Unsettled messages of these kinds and requests available at ``now`` (never one
        another relay holds), in id order."""
        query = (
            select(OutboxMessage)
            .where(
                OutboxMessage.settled_at.is_(None),
                OutboxMessage.available_at <= now,
                OutboxMessage.kind.in_(list(kinds)),
                OutboxMessage.request_id.in_(list(request_ids)),
            )
            .order_by(OutboxMessage.id)
        )
        if self.db.is_postgres:
            query = query.with_for_update(skip_locked=True)
        return list(session.execute(query).scalars())

    @staticmethod
    def newest_unsettled(
        session: Session, kinds: Collection[str], request_ids: Collection[int]
    ) -> dict[tuple[str, int | None, str | None], int]:
        """The newest unsettled message id per (kind, request, recipient)."""
        query = (
            select(
                OutboxMessage.kind,
                OutboxMessage.request_id,
                OutboxMessage.recipient,
                func.max(OutboxMessage.id),
            )
            .where(
                OutboxMessage.settled_at.is_(None),
                OutboxMessage.kind.in_(list(kinds)),
                OutboxMessage.request_id.in_(list(request_ids)),
            )
            .group_by(OutboxMessage.kind, OutboxMessage.request_id, OutboxMessage.recipient)
        )
        return {
            (kind, request_id, recipient): int(max_id)
            for kind, request_id, recipient, max_id in session.execute(query)
        }

    @staticmethod
    def renew(session: Session, ids: Sequence[int], until: datetime) -> None:
        """Keep the claim on these unsettled messages until ``until``."""
        session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id.in_(list(ids)),
                OutboxMessage.settled_at.is_(None),
                OutboxMessage.available_at < until,
            )
            .values(available_at=until)
        )

    @staticmethod
    def release(session: Session, ids: Sequence[int], now: datetime) -> None:
        """Make these claimed, unsettled messages available again at ``now``."""
        session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id.in_(list(ids)),
                OutboxMessage.settled_at.is_(None),
                OutboxMessage.available_at > now,  # still our claim (kept, never lapsed)
            )
            .values(available_at=now)
        )

    @staticmethod
    def recipients(session: Session, request_id: int, kind: str) -> list[str | None]:
        """Everyone a message of ``kind`` about the request was queued for (settled or not)."""
        query = select(OutboxMessage.recipient).where(
            OutboxMessage.request_id == request_id, OutboxMessage.kind == kind
        )
        return list(session.execute(query).scalars())

    @staticmethod
    def unsettled(session: Session) -> int:
        """How many messages wait for delivery (due now or later)."""
        query = select(func.count()).where(OutboxMessage.settled_at.is_(None))
        return int(session.execute(query).scalar_one())
