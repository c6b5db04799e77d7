"""A slow Slack never makes two relays send the same message."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from conftest import PUBLISHER, START, make_service, register, utc
from jitaccess.app.outbox import Notification, OutboxRelay
from jitaccess.domain.policy import ApprovalMode
from jitaccess.store.db import Database
from jitaccess.store.models import OutboxMessage

T0 = utc(START)


class SlowSlack:
    """Takes ``seconds`` per message and records who sent what."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.sent: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def notifier(self, relay: str) -> object:
        outer = self

        class Notifier:
            def deliver(self, note: Notification, now: datetime) -> None:
                time.sleep(outer.seconds)
                with outer._lock:
                    outer.sent.append((relay, note.dedup_key))

        return Notifier()


def claimed(db: Database) -> bool:
    with db.transaction(readonly=True) as s:
        return bool(
            s.execute(
                select(func.count()).where(
                    OutboxMessage.settled_at.is_(None), OutboxMessage.available_at > T0
                )
            ).scalar_one()
        )


@pytest.mark.parametrize("speed", [1, 4], ids=["wall clock", "clock 4x faster"])
def test_a_delivery_longer_than_the_lease_is_never_sent_twice(db: Database, speed: int) -> None:
    """While one relay is slow, its claim is renewed: a second relay sends none of its
    messages. Both relays read one clock; when it runs faster than the wall (the
    sandbox's, the replica test's), the lease is still kept on that clock."""
    service, _ = make_service(db)
    register(service, mode=ApprovalMode.AUTOMATIC, approvers=())
    service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=timedelta(hours=1),
        justification="x",
        starts_at=T0 + timedelta(hours=1),
        now=T0,
    )  # two messages: pending and auto-approved, both for the requester
    lease = timedelta(seconds=1.2 * speed)  # 1.2 s of wall time
    slack = SlowSlack(seconds=1.5)
    started = time.monotonic()

    def clock() -> datetime:
        return T0 + timedelta(seconds=(time.monotonic() - started) * speed)

    first = OutboxRelay(
        db,
        slack.notifier("first"),  # type: ignore[arg-type]
        lease=lease,
        clock=clock if speed != 1 else None,  # None: ``now`` plus the wall time since
    )
    second = OutboxRelay(Database(db.url), slack.notifier("second"), lease=lease)  # type: ignore[arg-type]

    draining = threading.Thread(target=first.drain, args=(T0,))
    draining.start()
    while not claimed(db) and draining.is_alive():
        time.sleep(0.01)  # until the first relay holds its claim
    assert draining.is_alive()
    while draining.is_alive():
        # The second relay reads the same clock, past the first lease.
        second.drain(clock())
        time.sleep(0.05)
    draining.join()
    assert clock() - T0 > 2 * lease
    assert sorted(key for _, key in slack.sent) == sorted(set(key for _, key in slack.sent))
    assert {relay for relay, _ in slack.sent} == {"first"}
    assert len(slack.sent) == 2
