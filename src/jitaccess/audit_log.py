"""Verifying and exporting the audit log (the read side of ``store.audit``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jitaccess.domain.audit_chain import GENESIS, verify_chain
from jitaccess.store import audit
from jitaccess.store.db import Database
from jitaccess.store.models import AuditHead


@dataclass(frozen=True)
class VerifyResult:
    entries: int
    head_hash: str
    problems: list[str]


def verify(db: Database) -> VerifyResult:
    with db.transaction(readonly=True) as session:
        stored = [audit.to_stored(row) for row in audit.iter_entries(session)]
        head = session.get(AuditHead, 1)
        problems = verify_chain(stored, head.seq if head else None, head.hash if head else None)
        return VerifyResult(len(stored), head.hash if head else GENESIS, problems)


def export_rows(db: Database) -> Iterator[dict[str, Any]]:
    with db.transaction(readonly=True) as session:
        for row in audit.iter_entries(session):
            stored = audit.to_stored(row)
            yield {**stored.entry.canonical(), "prev_hash": stored.prev_hash, "hash": stored.hash}
