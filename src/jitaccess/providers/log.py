"""The default provider: records grants in the database and logs them.

It holds no real access anywhere; it lets a team try the whole flow and gives
tests an observable backend. Real backends (Azure, webhooks) plug in the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from jitaccess.providers.base import GrantSpec, HeldGrant
from jitaccess.store import log_grants
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
        self.grant_many([spec], now)

    def revoke(self, spec: GrantSpec, now: datetime) -> None:
        self.revoke_many([spec], now)

    def grant_many(self, specs: Sequence[GrantSpec], now: datetime) -> list[str | None]:
        """Grant a sweep's batch in one transaction (the log provider's own table)."""
        with self._db.transaction() as session:
            rows = self._rows(session, specs)
            for spec in specs:
                row = rows.get((spec.request_id, spec.standing))
                if row is None:
                    row = LogGrant(
                        request_id=spec.request_id,
                        standing=spec.standing,
                        app=spec.app,
                        scope=spec.scope,
                        principal=spec.principal,
                        role=spec.role,
                        granted_at=now,
                        grant_calls=0,
                        revoke_calls=0,
                    )
                    session.add(row)
                    rows[(spec.request_id, spec.standing)] = row
                row.grant_calls = (row.grant_calls or 0) + 1
        for spec in specs:
            log.info(
                "GRANT %s to %s at %s (request %s, until %s)",
                spec.role,
                spec.principal,
                spec.scope,
                spec.request_id,
                spec.ends_at.isoformat(),
            )
        return [None] * len(specs)

    def revoke_many(self, specs: Sequence[GrantSpec], now: datetime) -> list[str | None]:
        """Revoke a sweep's batch in one transaction; what is not held counts as revoked."""
        with self._db.transaction() as session:
            rows = self._rows(session, specs)
            for spec in specs:
                row = rows.get((spec.request_id, spec.standing))
                if row is not None:
                    row.revoke_calls = (row.revoke_calls or 0) + 1
                    if row.revoked_at is None:
                        row.revoked_at = now
        for spec in specs:
            log.info(
                "REVOKE %s from %s at %s (request %s)",
                spec.role,
                spec.principal,
                spec.scope,
                spec.request_id,
            )
        return [None] * len(specs)

    @staticmethod
    def _rows(session: Session, specs: Sequence[GrantSpec]) -> dict[tuple[int, bool], LogGrant]:
        found: dict[tuple[int, bool], LogGrant] = {}
        for standing in (False, True):
            ids = [spec.request_id for spec in specs if spec.standing is standing]
            for row in log_grants.of_requests(session, ids, standing=standing):
                found[(row.request_id, row.standing)] = row
        return found

    def held(self, *, standing: bool = False) -> list[LogGrant]:
        """JIT grants (or, with ``standing``, standing grants) currently held."""
        with self._db.transaction(readonly=True) as session:
            return log_grants.held(session, standing=standing)

    def list_grants(self, scope: str, config: Mapping[str, Any]) -> list[HeldGrant]:
        with self._db.transaction(readonly=True) as session:
            rows = log_grants.held_at(session, scope)
            return [HeldGrant(r.request_id, r.scope, r.principal, r.role, r.standing) for r in rows]
