"""Remembers the signatures of Slack HTTP requests already handled, in the database
(so every replica and a restarted process share them): a signed request replayed
within Slack's five-minute timestamp window is recognised and does nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from jitaccess.store.db import Database
from jitaccess.store.models import SlackSignature

#: Slack's (and Bolt's) signature check accepts a timestamp up to five minutes away
#: from the wall clock, either way: a signature received now is replayable for at most
#: ten minutes. Keep it that long.
KEEP = timedelta(minutes=10)


def wall_clock() -> datetime:
    return datetime.now(UTC)


class ReplayGuard:
    """``first_time(signature)``: ``True`` once per signature within :data:`KEEP`.

    The wall clock, not a service clock: the window it guards is the one the
    signature check applies, which reads the wall clock."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = wall_clock) -> None:
        self.db = db
        self.clock = clock

    def first_time(self, signature: str) -> bool:
        now = self.clock()
        try:
            with self.db.transaction() as session:
                session.execute(delete(SlackSignature).where(SlackSignature.expires_at <= now))
                session.add(
                    SlackSignature(signature=signature, received_at=now, expires_at=now + KEEP)
                )
        except IntegrityError:
            return False
        return True

    __call__ = first_time
