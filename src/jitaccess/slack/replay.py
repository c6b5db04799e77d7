"""Remembers what Slack sent that was already handled, in the database (so every
replica and a restarted process share it): the signatures of HTTP requests (a signed
request replayed within Slack's five-minute timestamp window is recognised and does
nothing) and the ids of Events API deliveries (a retried event is handled once).
Both tables are pruned as they are written, so they never grow without bound."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from jitaccess.app.slack_messages import SlackMessages

#: Slack's (and Bolt's) signature check accepts a timestamp up to five minutes away
#: from the wall clock, either way: a signature received now is replayable for at most
#: ten minutes. Keep it that long.
KEEP = timedelta(minutes=10)
#: Slack retries an undelivered event three times, the last about five minutes after the
#: first attempt (and never once a day has passed): an event id is kept a day.
EVENT_KEEP = timedelta(days=1)


def wall_clock() -> datetime:
    return datetime.now(UTC)


class ReplayGuard:
    """``first_time(signature)``: ``True`` once per signature within :data:`KEEP`.

    The wall clock, not a service clock: the window it guards is the one the
    signature check applies, which reads the wall clock."""

    def __init__(
        self, messages: SlackMessages, *, clock: Callable[[], datetime] = wall_clock
    ) -> None:
        self.messages = messages
        self.clock = clock

    def first_time(self, signature: str) -> bool:
        return self.messages.first_signature(signature, self.clock(), KEEP)

    __call__ = first_time


def first_event_delivery(messages: SlackMessages, event_id: str, now: datetime) -> bool:
    """``True`` the first time an Events API ``event_id`` is seen within :data:`EVENT_KEEP`;
    ids older than that are pruned in the same transaction."""
    return messages.first_event(event_id, now, EVENT_KEEP)
