"""One card per person per request, the steps as replies in its thread: alerts and
summaries under the card, a card Slack lost posted again, no edit that changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from freezegun import freeze_time

from conftest import ADMIN, APPROVER, PUBLISHER, START, register, utc
from jitaccess.app.outbox import Notification
from jitaccess.domain.policy import ApprovalMode
from jitaccess.store.db import Database
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, broadcast, first_line, now, texts

T0 = utc(START)
H = timedelta(hours=1)


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def submitted(world: SlackWorld) -> int:
    register(world.service)
    rid = world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=H,
        justification="rotate the keys",
        starts_at=T0 + H,
        now=now(),
    ).id
    world.deliver()
    return rid


def note(kind: str, recipient: str, rid: int, key: str, **payload: object) -> Notification:
    return Notification(0, key, kind, recipient, rid, dict(payload), 0)


def test_a_revoke_failing_alert_is_a_broadcast_reply_under_the_approvers_card(
    world: SlackWorld,
) -> None:
    """An alert to act on: in the thread of the approver's card for the request, and
    broadcast (it must notify); an admin with no card for it gets it on its own."""
    rid = submitted(world)
    card = world.card_for(APPROVER, rid)
    world.runtime.notifier.deliver(note("revoke_failing", APPROVER, rid, "alert:a"), now())
    [alert] = world.thread(APPROVER, card)
    assert "Revoke failing" in texts(alert) and broadcast(alert)
    world.runtime.notifier.deliver(note("revoke_failing", ADMIN, rid, "alert:b"), now())
    [alone] = world.fake.dms_to(ADMIN)
    assert "Revoke failing" in texts(alone) and "thread_ts" not in alone
    # A redelivery (a crash before the message was settled) posts nothing new.
    posts = len(world.fake.calls_to("chat.postMessage"))
    world.runtime.notifier.deliver(note("revoke_failing", APPROVER, rid, "alert:a"), now())
    world.runtime.notifier.deliver(note("revoke_failing", ADMIN, rid, "alert:b"), now())
    assert len(world.fake.calls_to("chat.postMessage")) == posts


def test_a_card_slack_lost_is_posted_again_and_the_step_goes_under_the_new_one(
    world: SlackWorld,
) -> None:
    rid = submitted(world)
    old = world.requester_card(PUBLISHER, rid)
    with world.fake._lock:  # the person deleted it: Slack answers message_not_found
        dm = world.fake.dm_channel_for(PUBLISHER)
        world.fake.messages[dm] = [m for m in world.fake.messages[dm] if m["ts"] != old["ts"]]
    world.service.approve(rid, actor=APPROVER, reason="CHG-1", now=now())
    world.deliver()
    card = world.requester_card(PUBLISHER, rid)
    assert card["ts"] != old["ts"] and "Approved" in first_line(card)
    [approved] = world.thread(PUBLISHER, card)
    assert "approved by" in texts(approved)


def test_an_edit_that_would_change_nothing_is_not_sent(world: SlackWorld) -> None:
    """A card already showing the request as it is (its message delivered again under
    another key, e.g. a step that changes nothing on an approver's card) is left alone."""
    rid = submitted(world)
    updates = len(world.fake.calls_to("chat.update"))
    world.runtime.notifier.deliver(
        note("approver_card", APPROVER, rid, "again", to="pending"), now()
    )
    assert len(world.fake.calls_to("chat.update")) == updates
    world.service.approve(rid, actor=APPROVER, reason="CHG-1", now=now())
    world.deliver()
    assert len(world.fake.calls_to("chat.update")) > updates  # a real change is edited
    assert "Approved" in first_line(world.card_for(APPROVER, rid))


def test_the_activity_summary_is_a_quiet_reply_under_the_requesters_card(
    world: SlackWorld,
) -> None:
    rid = submitted(world)
    summary = {
        "window_start": (T0 + H).isoformat(),
        "window_end": (T0 + 2 * H).isoformat(),
        "operations": [],
        "operations_total": 0,
        "failures": [],
        "failures_total": 0,
        "resources": [],
        "resources_total": 0,
    }
    card = world.requester_card(PUBLISHER, rid)
    world.runtime.notifier.deliver(
        note("activity_summary", PUBLISHER, rid, "summary", summary=summary, sha256="ab" * 32),
        now(),
    )
    reply = world.thread(PUBLISHER, card)[-1]
    assert "No operations" in texts(reply) and not broadcast(reply)
    assert len(world.fake.cards_to(PUBLISHER)) == 1


def test_a_request_the_policy_approved_never_says_it_was_sent_to_the_approvers(
    world: SlackWorld,
) -> None:
    """Automatic mode: Pat's one card starts with its state, and its thread opens with
    the policy's approval (the approvers were told), never "sent to the approvers"."""
    register(world.service, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
    rid = world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=H,
        justification="rotate the keys",
        starts_at=T0 + H,
        now=now(),
    ).id
    world.deliver()
    card = world.requester_card(PUBLISHER, rid)
    assert "Approved automatically" in first_line(card)
    steps = [texts(reply) for reply in world.thread(PUBLISHER, card)]
    assert len(steps) == 1, steps
    assert "approved by the policy (automatic mode); the approvers were told" in steps[0]
    assert not any("sent to the approvers" in step for step in steps)
    # The card's blocks say the state once: in its first line, not again in its body.
    assert json.dumps(card["blocks"]).count("Approved automatically") == 1, card["blocks"]
