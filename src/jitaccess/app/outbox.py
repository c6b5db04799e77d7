"""The outbox relay: delivers queued notifications at least once, never inside a
transition's transaction, so a slow or absent Slack never blocks or loses one."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from sqlalchemy.orm import Session

from jitaccess.app.leases import LeaseKeeper, running_from
from jitaccess.domain.backoff import backoff
from jitaccess.store.db import Database
from jitaccess.store.models import OutboxMessage
from jitaccess.store.queue import OutboxQueue

log = logging.getLogger("jitaccess.outbox")

#: A failed delivery is tried again 2 s later, then 4 s, 8 s… (never past ``max_backoff``
#: nor this).
_FIRST_BACKOFF = timedelta(seconds=2)
_LONGEST_BACKOFF = timedelta(seconds=2**12)


@dataclass(frozen=True)
class Notification:
    """One queued message; ``dedup_key`` is unique, so a retry can tell it was sent."""

    id: int
    dedup_key: str
    kind: str
    recipient: str | None
    request_id: int | None
    payload: dict[str, object]
    attempts: int
    #: Older queued messages for the same card, settled as superseded once this one
    #: is delivered (see :data:`COALESCED_KINDS`).
    supersedes: tuple[int, ...] = ()
    #: A newer message of the same kind, request and recipient is queued: this one's
    #: step is still told (each step is news to the requester, a reply in the card's
    #: thread) but the card is left for the newer one to edit.
    followed: bool = False


class OutboxKind(StrEnum):
    """What an outbox message is; the notifier renders each kind its own way."""

    #: An approver's decision card, edited in place as the request moves.
    APPROVER_CARD = "approver_card"
    #: One step of the requester's request: their one card edited, the step a reply
    #: in its thread.
    REQUESTER_UPDATE = "requester_update"
    #: The reminder before the end of the window (available then, not before): a
    #: broadcast reply in the thread of the requester's card.
    ENDING_SOON = "ending_soon"
    #: An approver's card for an extension, a broadcast reply in the thread of their
    #: card for the request (posted when asked, edited when decided).
    EXTENSION_CARD = "extension_card"
    #: An alert to approvers and admins that a revoke keeps failing (a broadcast reply
    #: in the thread of their card for the request).
    REVOKE_FAILING = "revoke_failing"
    #: A break-glass alert to every approver and admin, edited in place as the request
    #: moves and once someone reviewed it (with *Acknowledge* until then).
    BREAKGLASS_ALERT = "breakglass_alert"
    #: The request's message in the application's feed channel (``recipient`` is the
    #: channel ID), posted once and edited in place as the request moves; no buttons.
    FEED_CARD = "feed_card"
    #: What the publisher did during the window (Azure Activity Log), once access ended;
    #: the summary travels in the payload, as audited.
    ACTIVITY_SUMMARY = "activity_summary"


#: Kinds whose messages edit one card in place, rendered from the request as it is
#: now: of several queued for the same card (same request, recipient and kind) only
#: the newest needs a Slack call.
COALESCED_KINDS = frozenset(
    {
        OutboxKind.APPROVER_CARD.value,
        OutboxKind.BREAKGLASS_ALERT.value,
        OutboxKind.FEED_CARD.value,
    }
)
#: Kinds whose every message is told (a thread reply), but whose card only the newest
#: message edits.
FOLLOWED_KINDS = frozenset({OutboxKind.REQUESTER_UPDATE.value})


class Undeliverable(Exception):
    """Delivery can never succeed (e.g. the user left the workspace): record why and
    stop retrying, instead of retrying forever and growing the backlog."""


class Skipped(Exception):
    """The message is no longer worth sending (a reminder for access already over):
    settled, with the reason, and never counted as delivered."""


class Notifier(Protocol):
    def deliver(self, note: Notification, now: datetime) -> None:
        """Return only once Slack accepted the message. Raise ``Undeliverable`` or
        ``Skipped`` to settle it unsent; any other error leaves it queued for a retry."""


class LoggingNotifier:
    """Writes a log line and counts the message as delivered: for tests and benchmarks
    only. Never wire it where the outbox holds real Slack messages: it would mark them
    delivered without Slack ever seeing them."""

    def __init__(self) -> None:
        self.delivered: list[Notification] = []

    def deliver(self, note: Notification, now: datetime) -> None:
        self.delivered.append(note)
        log.info(
            "notify %s %s about request %s: %s",
            note.recipient,
            note.kind,
            note.request_id,
            note.payload,
        )


@dataclass
class RelayReport:
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    skipped: int = 0
    #: Older messages for a card settled unsent because a newer one was delivered.
    superseded: int = 0
    #: Messages left undelivered because this relay has no notifier (no Slack settings).
    held: int = 0


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        notifier: Notifier | None,
        *,
        worker_id: str = "relay",
        lease: timedelta = timedelta(seconds=60),
        max_backoff: timedelta = timedelta(minutes=5),
        stopping: threading.Event | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.db = db
        self.queue = OutboxQueue(db)
        #: The clock every relay compares claims with, read to keep leases alive while
        #: Slack is slow (None: the ``now`` a drain was given, plus the wall time since).
        self.clock = clock
        #: None: no Slack here (e.g. the CLI without Slack settings); ``drain`` then
        #: leaves every message for a process that can deliver it (``serve``).
        self.notifier = notifier
        self.worker_id = worker_id
        self.lease = lease
        self.max_backoff = max_backoff
        #: The last delivery error, None once a delivery succeeds again (for /readyz).
        self.last_error: str | None = None
        #: Set when the process is stopping: ``drain`` stops before its next message and
        #: gives back the rest of its claim.
        self.stopping = stopping if stopping is not None else threading.Event()

    def drain(self, now: datetime, *, batch_size: int = 100, max_batches: int = 50) -> RelayReport:
        """Deliver what is due, oldest first. Claims rows by pushing ``available_at``
        ahead by a lease (with SKIP LOCKED on PostgreSQL), so replicas share the work.

        Without a notifier nothing is claimed or changed: a message counts as delivered
        only when Slack accepted it."""
        report = RelayReport()
        notifier = self.notifier
        if notifier is None:
            report.held = self.undelivered()
            return report
        clock = self.clock or running_from(now)
        for _ in range(max_batches):
            if self.stopping.is_set():
                break
            notes = self._claim(now, batch_size)
            if not notes:
                break
            if self._deliver_batch(notifier, notes, now, report, clock):
                return report  # stopping
            after_batch = getattr(notifier, "after_batch", None)
            if after_batch is not None:
                after_batch(now)
            if report.failed:
                # Slack is failing: stop hammering it; the next drain retries.
                break
        return report

    def _deliver_batch(
        self,
        notifier: Notifier,
        notes: list[Notification],
        now: datetime,
        report: RelayReport,
        clock: Callable[[], datetime],
    ) -> bool:
        """Deliver a claimed batch, one message at a time, while a keeper renews the
        leases of those not settled yet (a slow Slack must not let another relay send
        them again). Returns True when it stopped early because the process is stopping."""
        keeper = LeaseKeeper(
            self._renew,
            [i for note in notes for i in (note.id, *note.supersedes)],
            self.lease,
            clock,
            claimed_at=now,
        )
        with keeper:
            for index, note in enumerate(notes):
                if self.stopping.is_set():
                    self._release(notes[index:], now)
                    return True
                try:
                    self._deliver_one(notifier, note, now, report)
                finally:
                    keeper.done([note.id, *note.supersedes])
        return False

    def _deliver_one(
        self, notifier: Notifier, note: Notification, now: datetime, report: RelayReport
    ) -> None:
        error = None
        try:
            notifier.deliver(note, now)
        except Undeliverable as exc:
            log.error("dropping %s: %s", note.dedup_key, exc)
            self._settle(note, None, now, unsent=f"undeliverable: {exc}")
            report.dropped += 1
            return
        except Skipped as exc:
            self._settle(note, None, now, unsent=f"skipped: {exc}")
            report.skipped += 1
            return
        except Exception as exc:  # delivery failures are retried, never fatal
            error = str(exc) or type(exc).__name__
            log.warning("delivery of %s failed: %s", note.dedup_key, error)
        self._settle(note, error, now)
        self.last_error = error
        if error is None:
            report.delivered += 1
            report.superseded += len(note.supersedes)
        else:
            report.failed += 1

    def _renew(self, ids: list[int], until: datetime) -> None:
        with self.db.transaction() as session:
            self.queue.renew(session, ids, until)

    def undelivered(self) -> int:
        """How many messages wait for delivery (due now or later)."""
        with self.db.transaction(readonly=True) as session:
            return self.queue.unsettled(session)

    def _claim(self, now: datetime, limit: int) -> list[Notification]:
        with self.db.transaction() as session:
            rows = self.queue.due(session, now, limit)
            groups = self._coalesce(session, rows, now)
            followed = self._followed(session, rows)
            notes = []
            for row in rows:
                group = groups.get(row.id)
                if group is None:
                    continue  # superseded by a newer row of its card, sent instead
                newest = group[-1]
                notes.append(
                    Notification(
                        newest.id,
                        newest.dedup_key,
                        newest.kind,
                        newest.recipient,
                        newest.request_id,
                        dict(newest.payload),
                        newest.attempts,
                        supersedes=tuple(r.id for r in group[:-1]),
                        followed=row.id in followed,
                    )
                )
                for member in group:
                    member.available_at = now + self.lease
            return notes

    def _coalesce(
        self, session: Session, rows: list[OutboxMessage], now: datetime
    ) -> dict[int, list[OutboxMessage]]:
        """Group the claimed rows by card. A card's group also takes in its other due,
        unclaimed rows beyond this batch; it is delivered, as its newest row, at the
        place of its oldest. Returns each group (oldest first) under its first claimed
        row; rows not listed are members of an earlier group."""
        groups: dict[int, list[OutboxMessage]] = {}
        by_card: dict[tuple[str, int, str], list[OutboxMessage]] = {}
        for row in rows:
            if row.kind in COALESCED_KINDS and row.request_id is not None and row.recipient:
                by_card.setdefault((row.kind, row.request_id, row.recipient), []).append(row)
            else:
                groups[row.id] = [row]
        if not by_card:
            return groups
        claimed = {row.id for row in rows}
        more = self.queue.due_of(session, now, COALESCED_KINDS, {card[1] for card in by_card})
        for row in more:
            card = by_card.get((row.kind, row.request_id or 0, row.recipient or ""))
            if card is not None and row.id not in claimed:
                card.append(row)
        for card in by_card.values():
            first = card[0]  # claimed rows come first, in claim order
            card.sort(key=lambda r: r.id)
            groups[first.id] = card
        return groups

    def _followed(self, session: Session, rows: list[OutboxMessage]) -> set[int]:
        """Claimed rows of a :data:`FOLLOWED_KINDS` kind with a newer unsettled row of
        the same kind, request and recipient."""
        candidates = [r for r in rows if r.kind in FOLLOWED_KINDS and r.request_id is not None]
        if not candidates:
            return set()
        newest = self.queue.newest_unsettled(
            session, FOLLOWED_KINDS, {r.request_id for r in candidates if r.request_id}
        )
        return {
            r.id for r in candidates if newest.get((r.kind, r.request_id, r.recipient), r.id) > r.id
        }

    def _release(self, notes: list[Notification], now: datetime) -> None:
        """Give back claimed messages never tried (the process is stopping), so the next
        relay, here or in another replica, sends them without waiting out the lease."""
        with self.db.transaction() as session:
            ids = [i for note in notes for i in (note.id, *note.supersedes)]
            self.queue.release(session, ids, now)

    def _settle(
        self, note: Notification, error: str | None, now: datetime, *, unsent: str | None = None
    ) -> None:
        with self.db.transaction() as session:
            row = session.get(OutboxMessage, note.id)
            if row is None:
                return
            row.attempts += 1
            older = [
                o
                for o in (session.get(OutboxMessage, i) for i in note.supersedes)
                if o is not None and o.settled_at is None
            ]
            if error is None:
                row.settled_at = now
                row.delivered_at = None if unsent else now
                row.last_error = unsent
                for old in older:
                    if unsent:
                        # Not sent: the older ones are tried again on their own.
                        old.available_at = now
                        continue
                    # Slack accepted the newest: the card shows everything they would.
                    old.settled_at = now
                    old.delivered_at = None
                    old.last_error = f"superseded by {note.dedup_key}"
            else:
                row.last_error = error
                # 2 s after the first failure, then doubling (no jitter).
                cap = min(self.max_backoff, _LONGEST_BACKOFF)
                row.available_at = now + backoff(row.attempts, base=_FIRST_BACKOFF, cap=cap)
                for old in older:  # retried together with the newest
                    old.available_at = row.available_at
