"""Every read of the log provider's own table (the grants it recorded)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from jitaccess.store.models import LogGrant

#: Request ids per ``IN (...)`` list, well under every database's parameter limit.
_CHUNK = 500


def of_requests(session: Session, ids: Sequence[int], *, standing: bool) -> list[LogGrant]:
    """The rows recorded for these requests (or, with ``standing``, standing grants),
    read ``_CHUNK`` ids at a time."""
    found: list[LogGrant] = []
    for start in range(0, len(ids), _CHUNK):
        query = select(LogGrant).where(
            LogGrant.standing.is_(standing),
            LogGrant.request_id.in_(ids[start : start + _CHUNK]),
        )
        found.extend(session.execute(query).scalars())
    return found


def held(session: Session, *, standing: bool) -> list[LogGrant]:
    """JIT grants (or, with ``standing``, standing grants) not revoked."""
    query = select(LogGrant).where(LogGrant.revoked_at.is_(None), LogGrant.standing.is_(standing))
    return list(session.execute(query).scalars())


def held_at(session: Session, scope: str) -> list[LogGrant]:
    """Every grant not revoked at ``scope``."""
    query = select(LogGrant).where(LogGrant.revoked_at.is_(None), LogGrant.scope == scope)
    return list(session.execute(query).scalars())
