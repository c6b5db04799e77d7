"""Slack down for six hours of (frozen) time while sixty requests come and go.

The real Bolt app, its WebClient and the outbox relay run against the fake Slack API, as
under ``serve``; the scheduler's job (sweep, then deliver) runs every five minutes of
frozen time. While Slack answers 503 to everything, people keep acting through the CLI
path (the service): requests are submitted, approved, denied, left to time out, revoked,
released and cancelled. Asserted:

* transitions stay on time: after every tick nothing due is left undone, and each request
  was activated, expired, revoked or timed out at exactly the tick it was due;
* nothing reaches Slack while it is down, and on the first tick after it is back the
  whole backlog is delivered;
* every message arrives exactly once: one DM per requester step (its exact text), one
  card per approver and request (edited in place to the final outcome), reminders at
  most once and never for access that already ended; nothing undelivered, nothing dropped.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from conftest import APPROVER, APPROVER2, PUBLISHER, START, register, utc
from jitaccess.app.journal import POLICY_ACTOR
from jitaccess.app.outbox import Notification
from jitaccess.app.service import JitService
from jitaccess.domain.lifecycle import RequestState
from jitaccess.domain.policy import ApprovalMode
from jitaccess.slack.blocks import ids, markup
from jitaccess.slack.notifier import transition_text
from jitaccess.store.db import Database
from jitaccess.store.models import AccessRequest, OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, now, texts

T0 = utc(START)
TICK = timedelta(minutes=15)
DOWN_AT = 1  # tick index: Slack fails from T0 + 15 min ...
UP_AT = 25  # ... until T0 + 6 h 15 min
LAST_SUBMIT = 22  # three requests a tick, until T0 + 5 h 30 min
PER_TICK = 3
LAST_TICK = 36  # T0 + 9 h: everything has ended
FINAL_STATES = {"expired", "denied", "timed_out", "revoked", "cancelled"}


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def at(k: int) -> datetime:
    return T0 + k * TICK


def undelivered(db: Database, *, due_by: datetime) -> int:
    with db.transaction(readonly=True) as s:
        return int(
            s.execute(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.settled_at.is_(None), OutboxMessage.available_at <= due_by)
            ).scalar_one()
        )


def shown(fake: FakeSlack) -> str:
    """Everything people can see in Slack: messages, ephemerals, modals, App Homes."""
    views = {k: v["view"] for k, v in fake.views.items()}
    return json.dumps([fake.messages, fake.ephemerals, views], sort_keys=True, default=str)


def act(service: JitService, k: int, made: dict[int, list[int]]) -> None:
    """What people do at tick ``k`` (through the CLI path: Slack may be down).
    Request ``n`` (the n-th of the run) follows a plan derived from ``n``."""
    t = now()
    if k <= LAST_SUBMIT:
        made[k] = []
        for j in range(PER_TICK):
            n = PER_TICK * k + j
            offset = (n % 4) * TICK
            # Each on its own resource group, set up like "auto" or "crm": one person's
            # requests for a role on one resource group may not overlap.
            app = f"auto-{n}" if n % 3 == 0 else f"crm-{n}"
            if n % 3 == 0:
                register(
                    service, name=app, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,), now=t
                )
            else:
                register(service, name=app, approvers=(APPROVER, APPROVER2), now=t)
            request_id = service.submit(
                app,
                requester=PUBLISHER,
                role="Contributor" if n % 2 else "Owner",
                duration=TICK * (n % 4 + 2),
                justification=f"maintenance window {n}",
                starts_at=t + offset,
                now=t,
            ).id
            made[k].append(request_id)
            if n % 13 == 0 and offset:
                service.cancel(request_id, actor=PUBLISHER, now=t)  # before it starts
    # The previous tick's manual requests are decided now (or never: they time out).
    for j, request_id in enumerate(made.get(k - 1, [])):
        n = PER_TICK * (k - 1) + j
        if service.get_request(request_id).state != "pending":
            continue
        if n % 5 == 1:
            service.deny(request_id, actor=APPROVER2, reason=f"not now {n}", now=t)
        elif n % 5 != 2:
            approver = APPROVER if n % 2 else APPROVER2
            service.approve(request_id, actor=approver, reason=f"CHG-{n}", now=t)
    # Some access ends early: revoked by an approver, or released by the requester.
    for age, every, verb in ((2, 4, "revoke"), (3, 5, "release")):
        for j, request_id in enumerate(made.get(k - age, [])):
            n = PER_TICK * (k - age) + j
            if n % every or service.get_request(request_id).state != "active":
                continue
            if verb == "revoke":
                service.revoke(request_id, actor=APPROVER, reason=f"incident {n}", now=t)
            else:
                service.release(request_id, actor=PUBLISHER, now=t)


def check_on_time(view: AccessRequest) -> None:
    """Each transition happened at the very tick it was due (all instants are on the grid)."""
    assert view.state in FINAL_STATES, (view.id, view.state)
    if view.activated_at is not None:
        assert view.decided_at is not None
        assert view.activated_at == max(view.starts_at, view.decided_at), view.id
    if view.state == "expired":
        assert view.activated_at is not None and view.ended_at == view.ends_at, view.id
    elif view.state == "timed_out":
        assert view.ended_at == view.approval_deadline_at, view.id
    elif view.state == "revoked":
        assert view.ended_at == view.end_requested_at, view.id


def test_long_slack_outage_keeps_transitions_on_time_and_delivers_each_message_once(
    world: SlackWorld,
) -> None:
    fake, service = world.fake, world.service
    register(service, name="crm", approvers=(APPROVER, APPROVER2))
    register(service, name="auto", mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
    made: dict[int, list[int]] = {}
    with freeze_time(T0) as clock:
        # Before the outage, one request through Slack itself, approved on its card.
        response, key = world.command(PUBLISHER, "request crm Owner 2h deploy hotfix")
        assert response.status == 200 and "submitted" in world.replies(key)[0]
        world.tick()
        card = next(m for m in fake.dms_to(APPROVER) if "Access request #1" in texts(m))
        assert world.click(APPROVER, card, ids.APPROVE).status == 200
        modal = world.last_modal(APPROVER)
        reason = {"reason": {"reason": {"type": "plain_text_input", "value": "CHG-0"}}}
        assert world.submit(APPROVER, modal, reason).status == 200
        world.tick()
        assert service.get_request(1).state == "active"
        calls_before, shown_before = 0, ""

        for k in range(DOWN_AT, LAST_TICK + 1):
            clock.move_to(at(k))
            if k == DOWN_AT:
                fake.set_down(True)
                calls_before, shown_before = len(fake.calls), shown(fake)
            if k == UP_AT:
                fake.set_down(False)
                # Delivery was attempted (and refused) all along the outage.
                assert len(fake.calls) - calls_before > UP_AT - DOWN_AT
            act(service, k, made)
            sweep, relay = world.tick()
            due = service.next_deadline()
            assert due is None or due > at(k), f"tick {k}: something due was left: {due}"
            if k < UP_AT:
                # Nothing reached Slack, nothing was given up on. (A reminder for access
                # already over is settled without Slack, as skipped, never delivered.)
                assert shown(fake) == shown_before and relay.dropped == 0
            if k == UP_AT:
                # Back: the whole backlog goes out on the first tick.
                assert relay.failed == 0 and relay.delivered > 100
                assert undelivered(world.db, due_by=at(k)) == 0
        assert undelivered(world.db, due_by=at(LAST_TICK) + timedelta(days=1)) == 0

    # -- every transition on time --------------------------------------------------------
    with world.db.transaction(readonly=True) as s:
        views = s.execute(select(AccessRequest).order_by(AccessRequest.id)).scalars().all()
    assert len(views) == 1 + PER_TICK * LAST_SUBMIT
    for view in views:
        check_on_time(view)
    states = Counter(v.state for v in views)
    assert set(states) == FINAL_STATES, states  # every path was taken

    # -- every message exactly once --------------------------------------------------------
    with world.db.transaction(readonly=True) as s:
        rows = s.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars().all()
        assert all(r.settled_at is not None for r in rows)
        # Only a stale reminder, or an approver card update a newer one of the same card
        # replaced, is settled unsent, and it says why.
        unsent = [r for r in rows if r.delivered_at is None]
        assert {r.kind for r in unsent} <= {"ending_soon", "approver_card"}
        reminders_unsent = [r for r in unsent if r.kind == "ending_soon"]
        assert all((r.last_error or "").startswith("skipped:") for r in reminders_unsent)
        by_key = {r.dedup_key: r for r in rows}
        superseded = [r for r in unsent if r.kind == "approver_card"]
        assert superseded  # the outage queued several updates per card
        for old in superseded:
            newer = by_key[(old.last_error or "").removeprefix("superseded by ")]
            assert (newer.request_id, newer.recipient, newer.kind) == (
                old.request_id,
                old.recipient,
                old.kind,
            )
            assert newer.id > old.id and newer.delivered_at == old.settled_at
        sent_reminders = {r.request_id for r in rows if r.kind == "ending_soon" and r.delivered_at}
        assert not [r.last_error for r in rows if (r.last_error or "").startswith("undeliv")]
        steps = [
            Notification(r.id, r.dedup_key, r.kind, r.recipient, r.request_id, r.payload, 0)
            for r in rows
            if r.kind == "requester_update"
        ]
        reminder_ids = {r.request_id for r in rows if r.kind == "ending_soon"}
        requests = {r.id: r for r in s.execute(select(AccessRequest)).scalars()}
        assert not [
            r for r in rows if r.kind not in ("requester_update", "approver_card", "ending_soon")
        ]
    # One card per request in Pat's DM; every step and reminder is a reply under it.
    cards = Counter(
        re.search(r"#(\d+)", m["text"])[1]  # type: ignore[index]
        for m in fake.cards_to(PUBLISHER)
    )
    assert all(n == 1 for n in cards.values()), cards
    card_ts = {m["ts"] for m in fake.cards_to(PUBLISHER)}
    replies = [m for m in fake.dms_to(PUBLISHER) if m["ts"] not in card_ts]
    assert all(m["thread_ts"] in card_ts for m in replies)
    dms = Counter(m["text"] for m in replies)
    assert all(n == 1 for n in dms.values()), [t for t, n in dms.items() if n > 1]
    # A request the policy approved at submission has no "sent to the approvers" step:
    # its thread opens with the policy's approval.
    expected_steps = Counter(
        transition_text(note)
        for note in steps
        if not (
            note.payload.get("to") == "pending"
            and requests[note.request_id or 0].decided_by == POLICY_ACTOR
        )
    )
    assert all(n == 1 for n in expected_steps.values())
    assert set(expected_steps) <= set(dms), sorted(set(expected_steps) - set(dms))[:5]
    reminders = set(dms) - set(expected_steps)
    up = at(UP_AT)
    reminded = set()
    for text in reminders:
        assert text.startswith(":hourglass:"), text
        request_id = int(re.search(r"\(request #(\d+)\)", text)[1])  # type: ignore[index]
        reminded.add(request_id)
    assert reminded <= reminder_ids
    assert reminded == sent_reminders  # "delivered" is exactly what Slack got
    for request_id in reminder_ids:
        row = requests[request_id]
        ends = row.ended_at or row.ends_at
        if row.ended_at is not None and row.ended_at <= up:
            assert request_id not in reminded, request_id  # never a stale reminder
        elif row.state == "expired" and row.ends_at - timedelta(minutes=15) >= up:
            assert request_id in reminded, request_id  # due while Slack was up
        assert ends
    for approver in (APPROVER, APPROVER2):
        cards: Counter[int] = Counter()
        for message in fake.dms_to(approver):
            for view in views:
                if f'"Access request #{view.id}"' in texts(message):
                    cards[view.id] += 1
                    label = markup.STATE_LABEL[RequestState(view.state)]
                    assert f"*{label}*" in texts(message), (view.id, view.state)
                    assert ids.APPROVE not in texts(message)
        notified = {r.id for r in requests.values() if approver in r.notified_approvers}
        assert set(cards) == notified and set(cards.values()) == {1}, cards
    assert fake.server_errors == []
