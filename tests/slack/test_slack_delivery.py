"""Delivery through the outbox: Slack outages, rate limits, redelivery."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from conftest import APPROVER, APPROVER2, PUBLISHER, START, register, utc
from jitaccess.app.outbox import Notification
from jitaccess.slack.blocks import ids, markup
from jitaccess.store.db import Database
from jitaccess.store.models import OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, now, texts

T0 = utc(START)
H = timedelta(hours=1)


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def undelivered(db: Database) -> int:
    with db.transaction(readonly=True) as s:
        return int(
            s.execute(
                select(func.count())
                .select_from(OutboxMessage)
                .where(
                    OutboxMessage.settled_at.is_(None),
                    OutboxMessage.available_at <= now() + timedelta(days=1),
                )
            ).scalar_one()
        )


def test_slack_down_throughout_then_back_delivers_everything_once(world: SlackWorld) -> None:
    fake = world.fake
    register(world.service)
    with freeze_time(T0) as clock:
        # Requests arrive while Slack works; then Slack goes down for the rest.
        rid = world.service.submit(
            "crm",
            requester=PUBLISHER,
            role="Owner",
            duration=2 * H,
            justification="db failover",
            starts_at=T0 + H,
            now=now(),
        ).id
        fake.set_down(True)
        assert world.deliver().failed >= 1
        world.service.approve(rid, actor=APPROVER, reason="go", now=now())
        clock.move_to(T0 + H)
        sweep, relay = world.tick()
        assert sweep.activated == 1 and relay.failed > 0  # on time, Slack or not
        clock.move_to(T0 + 3 * H)
        sweep, relay = world.tick()
        assert sweep.expired == 1 and relay.failed > 0
        assert world.service.get_request(rid).state == "expired"
        assert fake.dms_to(PUBLISHER) == [] and fake.dms_to(APPROVER) == []

        fake.set_down(False)
        clock.move_to(T0 + 4 * H)  # past every backoff
        for _ in range(5):
            world.deliver()
        assert undelivered(world.db) == 0

    # Each approver has exactly one card, edited in place to the final outcome.
    for approver in (APPROVER, APPROVER2):
        cards = [m for m in fake.dms_to(approver) if "Access request #" in texts(m)]
        assert len(cards) == 1
        assert "Expired" in texts(cards[0]) and f"Approved by <@{APPROVER}>: go" in texts(cards[0])
    # The requester got one message per step, none twice.
    headlines = [m["text"] for m in fake.dms_to(PUBLISHER)]
    counts = Counter(headlines)
    assert all(n == 1 for n in counts.values()), counts
    for step in ("sent to the approvers", "approved by", "is active", "has expired"):
        assert any(step in h for h in headlines), (step, headlines)


def test_rate_limited_call_is_retried_after_retry_after(world: SlackWorld) -> None:
    register(world.service)
    world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=H,
        justification="x",
        starts_at=T0 + H,
        now=now(),
    )
    world.fake.fail_next("chat.postMessage", status=429, retry_after=1)
    report = world.deliver()
    assert report.failed == 0 and report.delivered >= 3
    assert len(world.fake.dms_to(APPROVER)) == 1
    # the first post was refused with 429, the SDK waited Retry-After and sent it again
    posts = world.fake.calls_to("chat.postMessage")
    assert posts[0].args["text"] == posts[1].args["text"]


def test_redelivering_a_message_already_shown_does_not_post_again(world: SlackWorld) -> None:
    register(world.service)
    rid = world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=H,
        justification="x",
        starts_at=T0 + H,
        now=now(),
    ).id
    world.deliver()
    with world.db.transaction(readonly=True) as s:
        row = s.execute(
            select(OutboxMessage).where(
                OutboxMessage.kind == "approver_card", OutboxMessage.recipient == APPROVER
            )
        ).scalar_one()
        note = Notification(
            row.id,
            row.dedup_key,
            row.kind,
            row.recipient,
            row.request_id,
            dict(row.payload),
            row.attempts,
        )
    before = len(world.fake.calls)
    world.runtime.notifier.deliver(note, now())  # as if we crashed before marking it sent
    new_calls = [c.method for c in world.fake.calls[before:]]
    assert "chat.postMessage" not in new_calls and "chat.update" not in new_calls
    assert len(world.fake.dms_to(APPROVER)) == 1
    assert rid


def test_a_user_who_left_the_workspace_does_not_block_the_queue(world: SlackWorld) -> None:
    register(world.service, approvers=(APPROVER, "UGONE1"))
    world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=H,
        justification="x",
        starts_at=T0 + H,
        now=now(),
    )
    world.fake.fail_next("conversations.open", error="user_not_found")
    report = world.deliver()
    assert report.dropped == 1
    assert undelivered(world.db) == 0


def test_long_justification_is_truncated_with_a_marker_not_rejected(world: SlackWorld) -> None:
    register(world.service)
    # 1,975 characters (within our limit) that escape to more than Slack's 3,000.
    long_text = "<script>alert(1)</script>" + "<b>" * 650
    rid = world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=H,
        justification=long_text,
        starts_at=T0 + H,
        now=now(),
    ).id
    world.deliver()
    card = world.card_for(APPROVER, rid)
    shown = json.dumps(card["blocks"], ensure_ascii=False)
    assert "&lt;script&gt;" in shown and "<script>" not in shown
    assert markup.TRUNCATED in shown
    for block in card["blocks"]:
        if block["type"] == "section" and block.get("text"):
            assert len(block["text"]["text"]) <= 3000
    assert ids.APPROVE in shown


def outbox_rows(db: Database, kind: str) -> list[OutboxMessage]:
    with db.transaction(readonly=True) as s:
        return list(s.execute(select(OutboxMessage).where(OutboxMessage.kind == kind)).scalars())


def test_a_reminder_no_longer_needed_is_settled_but_never_counted_delivered(
    world: SlackWorld,
) -> None:
    """A reminder for access already released is skipped: Slack got nothing, and the
    outbox says so rather than marking it delivered."""
    register(world.service)
    with freeze_time(T0) as clock:
        rid = world.service.submit(
            "crm",
            requester=PUBLISHER,
            role="Owner",
            duration=H,
            justification="x",
            starts_at=T0,
            now=now(),
        ).id
        world.service.approve(rid, actor=APPROVER, reason="go", now=now())
        world.tick()
        world.service.release(rid, actor=PUBLISHER, now=now())
        world.tick()
        clock.move_to(T0 + H)  # the reminder's time comes
        report = world.deliver()
    assert report.skipped == 1
    [reminder] = outbox_rows(world.db, "ending_soon")
    assert reminder.settled_at is not None and reminder.delivered_at is None
    assert reminder.last_error == f"skipped: request {rid} is revoked: no reminder needed"
    assert not [m for m in world.fake.dms_to(PUBLISHER) if m["text"].startswith(":hourglass:")]


def test_a_message_slack_cannot_take_is_dropped_not_marked_delivered(world: SlackWorld) -> None:
    """A message for a user Slack does not know is dropped with the reason, never 'delivered'."""
    register(world.service)
    world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=H,
        justification="x",
        starts_at=T0 + H,
        now=now(),
    )
    world.fake.fail_next("conversations.open", error="user_not_found")
    report = world.deliver()
    assert report.dropped == 1
    dropped = [
        r
        for r in outbox_rows(world.db, "approver_card") + outbox_rows(world.db, "requester_update")
        if r.last_error
    ]
    assert len(dropped) == 1
    assert dropped[0].delivered_at is None and dropped[0].settled_at is not None
    assert dropped[0].last_error == "undeliverable: Slack said user_not_found"
