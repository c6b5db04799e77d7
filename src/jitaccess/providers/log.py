"""The default provider: records grants in the database and logs them.

It holds no real access anywhere; it lets a team try the whole flow and gives
tests an observable backend. Real backends (Azure, webhooks) plug in the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select

from jitaccess.providers.base import GrantSpec, HeldGrant
from jitaccess.store.db import Database
from jitaccess.store.models import LogGrant

log = logging.getLogger("jitaccess.provider.log")


class LogProvider:
    name = "log"

    def __init__(self, db: Database) -> None:
        self._db = db
        #: Each call is a write transaction of its own; SQLite takes one writer at a time.
        self.max_concurrency = 1 if db.is_sqlite else 8

    def grant(self, spec: GrantSpec, now: datetime) -> None:
        with self._db.transaction() as session:
            row = session.get(LogGrant, (spec.request_id, spec.standing))
            if row is None:
                row = LogGrant(
                    request_id=spec.request_id,
                    standing=spec.standing,
                    app=spec.app,
                    scope=spec.scope,
                    principal=spec.principal,
                    role=spec.role,
                    granted_at=now,
                )
                session.add(row)
            row.grant_calls = (row.grant_calls or 0) + 1
        log.info(
            "GRANT %s to %s at %s (request %s, until %s)",
            spec.role,
            spec.principal,
            spec.scope,
            spec.request_id,
            spec.ends_at.isoformat(),
        )

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        with self._db.transaction() as session:
            row = session.get(LogGrant, (spec.request_id, spec.standing))
            if row is not None:
                row.revoke_calls = (row.revoke_calls or 0) + 1
                if row.revoked_at is None:
                    row.revoked_at = now
        log.info(
            "REVOKE %s from %s at %s (request %s)",
            spec.role,
            spec.principal,
            spec.scope,
            spec.request_id,
        )

    def held(self, *, standing: bool = False) -> list[LogGrant]:
        """JIT grants (or, with ``standing``, standing grants) currently held."""
        with self._db.transaction(readonly=True) as session:
            query = select(LogGrant).where(
                LogGrant.revoked_at.is_(None), LogGrant.standing.is_(standing)
            )
            return list(session.execute(query).scalars())

    def list_grants(self, scope: str, config: Mapping[str, Any]) -> list[HeldGrant]:
        with self._db.transaction(readonly=True) as session:
            rows = session.execute(
                select(LogGrant).where(LogGrant.revoked_at.is_(None), LogGrant.scope == scope)
            ).scalars()
            return [HeldGrant(r.request_id, r.scope, r.principal, r.role, r.standing) for r in rows]
