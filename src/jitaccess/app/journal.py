"""The journal: one transition = the state move, its audit entry and the outbox rows
telling each person concerned, written in the caller's transaction.

Used by the use cases (``service``) and the sweep (``sweep``) alike, so every
transition is recorded the same way, whoever makes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from jitaccess.app.outbox import OutboxKind
from jitaccess.domain.audit_chain import AuditEntry
from jitaccess.domain.lifecycle import Event, move
from jitaccess.store import audit, staged
from jitaccess.store.models import AccessRequest, OutboxMessage

log = logging.getLogger("jitaccess.service")

#: The actor of what jitaccess does by itself (time-outs, activations, expiries).
SYSTEM = "system"
#: The actor of an automatic approval.
POLICY_ACTOR = "policy:automatic"
#: Why jitaccess ended a request by itself, when no backend call was involved.
TIMED_OUT = "no approver decided in time"
LAPSED = "the window ended before access could be granted"


def end_by_system(
    session: Session, row: AccessRequest, event: Event, reason: str, now: datetime
) -> None:
    """End a request with no grant to take back (a time-out, a window that passed
    before any grant call): the transition, and no deadline left."""
    transition(session, row, event, actor=SYSTEM, now=now, reason=reason)
    row.ended_at = now
    row.next_deadline_at = None


def transition(
    session: Session,
    row: AccessRequest,
    event: Event,
    *,
    actor: str,
    now: datetime,
    reason: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Move ``row`` with ``event`` (the lifecycle refuses an illegal move) and record it."""
    before, _after = move(row, event)
    record(session, row, event, before, actor=actor, now=now, reason=reason, details=details)


def record(
    session: Session,
    row: AccessRequest,
    event: str,
    before: str | None,
    *,
    actor: str,
    now: datetime,
    reason: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Audit the transition and queue who must hear of it, in the same transaction."""
    after = row.state
    session.info.setdefault("jit_transitions", []).append((before, after))
    audit.append(
        session,
        at=now,
        actor=actor,
        action=event,
        app=row.app.name,
        request_id=row.id,
        from_state=before,
        to_state=after,
        reason=reason,
        details={
            "role": row.role,
            "requester": row.requester,
            "starts_at": row.starts_at.isoformat(),
            "ends_at": row.ends_at.isoformat(),
            # Every step of a break-glass request says so, with its incident.
            **({"breakglass": True, "incident_ref": row.incident_ref} if row.breakglass else {}),
            **(details or {}),
        },
    )
    log.info(
        "request %s %s -> %s by %s",
        row.id,
        before or "new",  # a request's first entry has no state before it
        after,
        actor,
        extra={
            "request_id": row.id,
            "from_state": before,
            "to_state": after,
            "actor": actor,
            "event": event,
        },
    )
    enqueue(
        session,
        row,
        after,
        OutboxKind.REQUESTER_UPDATE,
        row.requester,
        now,
        actor=actor,
        reason=reason,
        event=event,
        before=before,
    )
    # A break-glass request has no decision card: its alert card follows it instead.
    card = OutboxKind.BREAKGLASS_ALERT if row.breakglass else OutboxKind.APPROVER_CARD
    enqueue_each(
        session,
        row,
        after,
        card,
        row.notified_approvers,
        now,
        actor=actor,
        reason=reason,
        event=event,
        before=before,
    )


#: The messages that mean a request's card changed: each also refreshes the request's
#: message in the application's feed channel, once per step.
FEED_FOLLOWS = frozenset(
    {OutboxKind.REQUESTER_UPDATE, OutboxKind.APPROVER_CARD, OutboxKind.REVOKE_FAILING}
)
_FEED_QUEUED = "jit_feed_queued"


def enqueue(
    session: Session,
    row: AccessRequest,
    step: str,
    kind: OutboxKind,
    recipient: str,
    now: datetime,
    *,
    actor: str,
    reason: str | None,
    event: str | None = None,
    before: str | None = None,
    available_at: datetime | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Queue one message; ``details`` (JSON values) join its payload for the renderer."""
    staged.stage(
        session,
        OutboxMessage,
        {
            "dedup_key": f"request:{row.id}:{step}:{kind.value}:{recipient}",
            "kind": kind.value,
            "recipient": recipient,
            "request_id": row.id,
            "payload": {
                "event": event,
                "from": before,
                "to": row.state,
                "actor": actor,
                "reason": reason,
                **(details or {}),
            },
            "created_at": now,
            "available_at": available_at or now,
            "attempts": 0,
        },
    )
    if kind in FEED_FOLLOWS:
        _follow_in_feed(session, row, step, now, actor, reason, event, before, available_at)


def enqueue_each(
    session: Session,
    row: AccessRequest,
    step: str,
    kind: OutboxKind,
    recipients: Iterable[str],
    now: datetime,
    **message: Any,
) -> None:
    """:func:`enqueue` the same step to each of ``recipients``."""
    for recipient in recipients:
        enqueue(session, row, step, kind, recipient, now, **message)


def _follow_in_feed(
    session: Session,
    row: AccessRequest,
    step: str,
    now: datetime,
    actor: str,
    reason: str | None,
    event: str | None,
    before: str | None,
    available_at: datetime | None,
) -> None:
    """Queue one update of the request's feed message per step. The channel is taken
    from the application at submission and kept on the request, so a message once
    posted stays current even if the feed is turned off later."""
    if event == "submit" and row.feed_channel is None and row.app.feed_channel is not None:
        # Requests are made with their app's channel; this covers any made without.
        row.feed_channel = row.app.feed_channel
    channel = row.feed_channel
    if channel:
        queued: set[tuple[int, str]] = session.info.setdefault(_FEED_QUEUED, set())
        if (row.id, step) not in queued:
            queued.add((row.id, step))
            enqueue(
                session,
                row,
                step,
                OutboxKind.FEED_CARD,
                channel,
                now,
                actor=actor,
                reason=reason,
                event=event,
                before=before,
                available_at=available_at,
            )


def record_step(
    session: Session,
    row: AccessRequest,
    action: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Audit a step of ``row`` that keeps its state (an approval short of the quorum,
    an extension asked, a backend told the new end, a review, a failed attempt)."""
    return audit.append(
        session,
        at=now,
        actor=actor,
        action=action,
        app=row.app.name,
        request_id=row.id,
        from_state=row.state,
        to_state=row.state,
        reason=reason,
        details=details,
    )


def audit_attempt(
    session: Session, row: AccessRequest, action: str, error: str, now: datetime
) -> None:
    """Audit a failed backend attempt that changes no state (it is retried)."""
    details: dict[str, Any] = {"attempt": row.attempts}
    if row.next_deadline_at is not None and row.next_deadline_at > now:
        details["retry_at"] = row.next_deadline_at.isoformat()
    record_step(
        session,
        row,
        action,
        actor=SYSTEM,
        now=now,
        reason=error,
        details=details,
    )
