"""Every read and write of the Slack tables: the cards posted (the Slack message table)
and the replay guard's memory (request signatures and Events API ids already seen)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from jitaccess.store.models import SlackEvent, SlackMessage, SlackReply, SlackSignature


def card(session: Session, request_id: int, recipient: str, role: str) -> SlackMessage | None:
    """The card of ``role`` posted to ``recipient`` for the request, if one was."""
    return session.execute(
        select(SlackMessage).where(
            SlackMessage.request_id == request_id,
            SlackMessage.recipient == recipient,
            SlackMessage.role == role,
        )
    ).scalar_one_or_none()


def card_recipients(session: Session, request_id: int, role: str) -> list[str | None]:
    """Everyone a card of ``role`` was posted to for the request."""
    return list(
        session.execute(
            select(SlackMessage.recipient).where(
                SlackMessage.request_id == request_id, SlackMessage.role == role
            )
        ).scalars()
    )


def forget_all_cards(session: Session) -> None:
    """Forget where every card and message was posted: the relay then posts them anew
    instead of editing messages a workspace no longer has (the sandbox's fake Slack
    keeps its messages in memory and numbers them from the same start after a restart)."""
    session.execute(delete(SlackMessage))
    session.execute(delete(SlackReply))


def reply(session: Session, dedup_key: str) -> SlackReply | None:
    """The thread reply posted for the outbox message ``dedup_key``, if one was."""
    return session.execute(
        select(SlackReply).where(SlackReply.dedup_key == dedup_key)
    ).scalar_one_or_none()


def remember_reply(
    session: Session,
    dedup_key: str,
    request_id: int,
    recipient: str,
    *,
    channel: str,
    thread_ts: str | None,
    ts: str,
    now: datetime,
) -> None:
    """Record the reply Slack accepted for the outbox message ``dedup_key``."""
    session.add(
        SlackReply(
            dedup_key=dedup_key,
            request_id=request_id,
            recipient=recipient,
            channel=channel,
            thread_ts=thread_ts,
            ts=ts,
            posted_at=now,
        )
    )


def forget_signatures(session: Session, now: datetime) -> None:
    """Drop the request signatures whose replay window closed by ``now``."""
    session.execute(delete(SlackSignature).where(SlackSignature.expires_at <= now))


def forget_events(session: Session, before: datetime) -> None:
    """Drop the Events API ids received before ``before``."""
    session.execute(delete(SlackEvent).where(SlackEvent.received_at < before))


def remember_card(
    session: Session,
    request_id: int,
    recipient: str,
    role: str,
    *,
    channel: str,
    ts: str,
    dedup_key: str | None,
    headline: str | None,
    now: datetime,
) -> None:
    """Record where the card of ``role`` for ``recipient`` now is (posted or edited),
    the outbox message it shows and a digest of what it shows."""
    row = card(session, request_id, recipient, role)
    if row is None:
        row = SlackMessage(
            request_id=request_id,
            recipient=recipient,
            role=role,
            channel=channel,
            ts=ts,
            updated_at=now,
        )
        session.add(row)
    row.channel, row.ts, row.last_dedup_key = channel, ts, dedup_key
    row.headline = headline
    row.updated_at = now


def add_signature(session: Session, signature: str, now: datetime, expires_at: datetime) -> None:
    """Remember a request signature until ``expires_at``; a second one is an IntegrityError."""
    session.add(SlackSignature(signature=signature, received_at=now, expires_at=expires_at))


def add_event(session: Session, event_id: str, now: datetime) -> None:
    """Remember an Events API id; a second one is an IntegrityError."""
    session.add(SlackEvent(event_id=event_id, received_at=now))
