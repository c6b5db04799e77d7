"""Appending to and reading the hash-chained audit log."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from jitaccess.domain.audit_chain import GENESIS, AuditEntry, StoredEntry, chain_hash
from jitaccess.store import staged
from jitaccess.store.models import AuditEvent, AuditHead


def append(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    app: str | None = None,
    request_id: int | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry (inserted when the transaction commits, see ``staged``). Locks
    the chain head until the transaction ends, so concurrent writers (threads or
    replicas) extend the chain one at a time."""
    head: AuditHead | None = session.info.get("audit_head")
    if head is None:
        # Read (and lock) the head once per transaction; later appends reuse it.
        head = session.execute(
            select(AuditHead).where(AuditHead.id == 1).with_for_update()
        ).scalar_one_or_none()
        if head is None:
            head = AuditHead(id=1, seq=0, hash=GENESIS)
            session.add(head)
        session.info["audit_head"] = head
    entry = AuditEntry(
        seq=head.seq + 1,
        at=at,
        actor=actor,
        action=action,
        app=app,
        request_id=request_id,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        details=details or {},
    )
    digest = chain_hash(head.hash, entry)
    staged.stage(
        session,
        AuditEvent,
        {
            "seq": entry.seq,
            "at": at,
            "actor": actor,
            "action": action,
            "app": app,
            "request_id": request_id,
            "from_state": from_state,
            "to_state": to_state,
            "reason": reason,
            "details": entry.details,
            "prev_hash": head.hash,
            "hash": digest,
        },
    )
    head.seq = entry.seq
    head.hash = digest
    return entry


def to_stored(row: AuditEvent) -> StoredEntry:
    entry = AuditEntry(
        seq=row.seq,
        at=row.at,
        actor=row.actor,
        action=row.action,
        app=row.app,
        request_id=row.request_id,
        from_state=row.from_state,
        to_state=row.to_state,
        reason=row.reason,
        details=dict(row.details or {}),
    )
    return StoredEntry(entry=entry, prev_hash=row.prev_hash, hash=row.hash)


def iter_entries(session: Session, batch: int = 1000) -> Iterator[AuditEvent]:
    """Every entry in physical seq order, read in batches to bound memory."""
    last = 0
    while True:
        rows = (
            session.execute(
                select(AuditEvent)
                .where(AuditEvent.seq > last)
                .order_by(AuditEvent.seq)
                .limit(batch)
            )
            .scalars()
            .all()
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
