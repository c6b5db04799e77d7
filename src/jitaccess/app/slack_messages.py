"""Slack's own tables as the Slack adapter uses them, one transaction per use: where a
request's cards were posted (so the notifier edits them in place), and the replay
guard's memory of request signatures and Events API ids already handled. The SQL is in
:mod:`jitaccess.store.slack_messages`; this is the application layer's door to it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError

from jitaccess.store import slack_messages
from jitaccess.store.db import Database


@dataclass(frozen=True)
class PostedCard:
    """Where a card is in Slack, the outbox message it last showed and a digest of what it shows."""

    channel: str
    ts: str
    last_dedup_key: str | None
    headline: str | None


class SlackMessages:
    def __init__(self, db: Database) -> None:
        self.db = db

    def card(self, request_id: int, recipient: str, role: str) -> PostedCard | None:
        """The card of ``role`` posted to ``recipient`` for the request, if one was."""
        with self.db.transaction(readonly=True) as session:
            row = slack_messages.card(session, request_id, recipient, role)
            if row is None:
                return None
            return PostedCard(row.channel, row.ts, row.last_dedup_key, row.headline)

    def remember_card(
        self,
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
        """Record where the card now is, so the next change edits it in place."""
        with self.db.transaction() as session:
            slack_messages.remember_card(
                session,
                request_id,
                recipient,
                role,
                channel=channel,
                ts=ts,
                dedup_key=dedup_key,
                headline=headline,
                now=now,
            )

    def reply(self, dedup_key: str) -> tuple[str, str] | None:
        """Where the thread reply for the outbox message ``dedup_key`` was posted
        (channel, ts), if it was."""
        with self.db.transaction(readonly=True) as session:
            row = slack_messages.reply(session, dedup_key)
            return None if row is None else (row.channel, row.ts)

    def remember_reply(
        self,
        dedup_key: str,
        request_id: int,
        recipient: str,
        *,
        channel: str,
        thread_ts: str | None,
        ts: str,
        now: datetime,
    ) -> None:
        """Record a reply Slack accepted, so a redelivery of its message posts nothing."""
        with self.db.transaction() as session:
            slack_messages.remember_reply(
                session,
                dedup_key,
                request_id,
                recipient,
                channel=channel,
                thread_ts=thread_ts,
                ts=ts,
                now=now,
            )

    def first_signature(self, signature: str, now: datetime, keep: timedelta) -> bool:
        """``True`` the first time ``signature`` is seen; it is then remembered for
        ``keep``. Signatures past their time are pruned in the same transaction."""
        try:
            with self.db.transaction() as session:
                slack_messages.forget_signatures(session, now)
                slack_messages.add_signature(session, signature, now, now + keep)
        except IntegrityError:
            return False
        return True

    def first_event(self, event_id: str, now: datetime, keep: timedelta) -> bool:
        """``True`` the first time an Events API ``event_id`` is seen within ``keep``;
        ids older than that are pruned in the same transaction."""
        try:
            with self.db.transaction() as session:
                slack_messages.forget_events(session, now - keep)
                slack_messages.add_event(session, event_id, now)
        except IntegrityError:
            return False
        return True
