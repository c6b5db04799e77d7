"""Extend through Slack: the real Bolt app and WebClient against the fake Slack API."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from conftest import APPROVER, APPROVER2, OUTSIDER, PUBLISHER, START, register, utc
from fakes.webhook_receiver import WebhookReceiver
from jitaccess.domain.policy import ApprovalMode
from jitaccess.providers.webhook import WebhookProvider
from jitaccess.slack.blocks import ids, markup
from jitaccess.slack.runtime import AfterAck
from jitaccess.store.db import Database
from jitaccess.store.models import AuditEvent
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import (
    SlackWorld,
    broadcast,
    find_button,
    first_line,
    now,
    select,
    text_value,
    texts,
)

T0 = utc(START)
H = timedelta(hours=1)
M = timedelta(minutes=1)


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def active(world: SlackWorld, mode: ApprovalMode, hours: float = 2) -> int:
    register(world.service, mode=mode)
    rid = world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Contributor",
        duration=timedelta(hours=hours),
        justification="rotate the keys",
        now=now(),
    ).id
    if mode is ApprovalMode.MANUAL:
        world.service.approve(rid, actor=APPROVER, reason="CHG-1", now=now())
    world.tick()
    assert world.service.get_request(rid).state == "active"
    return rid


def step(world: SlackWorld, rid: int) -> dict[str, Any]:
    """The newest reply in the thread of Pat's one card for the request."""
    return world.thread(PUBLISHER, world.requester_card(PUBLISHER, rid))[-1]


def extension_cards(world: SlackWorld, approver: str, rid: int) -> list[dict[str, Any]]:
    return [
        m
        for m in world.fake.dms_to(approver)
        if f"Extension of request #{rid}" in json.dumps(m.get("blocks"))
    ]


def submit_extension(world: SlackWorld, user: str, duration: str, reason: str) -> Any:
    modal = world.last_modal(user)
    assert modal["view"]["callback_id"] == ids.EXTEND_MODAL, modal["view"]
    values = {"duration": {"duration": select(duration)}, "reason": {"reason": text_value(reason)}}
    return world.submit(user, modal, values)


def test_extend_button_extends_at_once_in_automatic_mode(world: SlackWorld) -> None:
    """Status card → Extend → modal (duration, reason) → the same request ends later."""
    rid = active(world, ApprovalMode.AUTOMATIC)
    card = world.requester_card(PUBLISHER, rid)
    assert world.click(PUBLISHER, card, ids.EXTEND).status == 200
    modal = world.last_modal(PUBLISHER)["view"]
    shown = json.dumps(modal)
    assert "Up to 6h more (8h in all)" in shown
    blank = submit_extension(world, PUBLISHER, "1h", "  ")
    assert json.loads(blank.body)["response_action"] == "errors"
    assert world.service.get_request(rid).ends_at == T0 + 2 * H
    assert submit_extension(world, PUBLISHER, "1h", "migration runs long").status == 200
    assert world.service.get_request(rid).ends_at == T0 + 3 * H
    world.deliver()
    latest = step(world, rid)
    assert "was extended" in texts(latest) and "the policy (automatic mode)" in texts(latest)
    # The policy extended it: the outcome is broadcast; the one card can extend again.
    assert broadcast(latest)
    card = world.requester_card(PUBLISHER, rid)
    assert "Active" in first_line(card) and ids.EXTEND in texts(card)
    # One end on screen: the card shows the new window, never the old one beside it.
    view = world.service.get_request(rid)
    assert markup.window(view) in texts(card)
    before = dataclasses.replace(view, ends_at=T0 + 2 * H)
    assert markup.window(before) not in texts(card)
    assert [m["ts"] for m in world.fake.cards_to(PUBLISHER)] == [card["ts"]]
    for approver in (APPROVER, APPROVER2):
        [told] = extension_cards(world, approver, rid)
        assert "Extended" in texts(told) and "migration runs long" in texts(told)
        assert ids.APPROVE_EXTENSION not in texts(told)
    with freeze_time(T0 + 2 * H + M):
        world.tick()
        assert world.service.get_request(rid).state == "active"


def test_too_long_an_extension_is_refused_in_the_modal_and_nothing_changes(
    world: SlackWorld,
) -> None:
    """Beyond the maximum counted from the start: the modal says how much is left."""
    rid = active(world, ApprovalMode.AUTOMATIC, hours=7)
    world.click(PUBLISHER, world.requester_card(PUBLISHER, rid), ids.EXTEND)
    response = submit_extension(world, PUBLISHER, "2h", "more")  # forged: the form offers 1h
    errors = json.loads(response.body)["errors"]
    assert "at most 1h can still be added" in errors["duration"]
    assert world.service.get_request(rid).ends_at == T0 + 7 * H


def test_manual_extension_card_is_approved_with_a_reason(world: SlackWorld) -> None:
    """Manual mode: approvers get an extension card; Approve asks a reason; the end moves."""
    rid = active(world, ApprovalMode.MANUAL)
    world.click(PUBLISHER, world.requester_card(PUBLISHER, rid), ids.EXTEND)
    assert submit_extension(world, PUBLISHER, "30m", "tests still running").status == 200
    view = world.service.get_request(rid)
    assert view.ends_at == T0 + 2 * H and view.extension_ends_at == T0 + 150 * M
    world.deliver()
    assert "sent to the approvers" in texts(step(world, rid))
    [card] = extension_cards(world, APPROVER2, rid)
    assert "tests still running" in texts(card) and ids.APPROVE_EXTENSION in texts(card)
    # The approver is notified: a broadcast reply under their card for the request.
    assert broadcast(card)
    assert card["thread_ts"] == world.card_for(APPROVER2, rid)["ts"]

    # an outsider clicking the card is refused before any modal can decide
    world.click(OUTSIDER, card, ids.APPROVE_EXTENSION)
    assert "Nothing to do" in json.dumps(world.last_modal(OUTSIDER))

    world.click(APPROVER2, card, ids.APPROVE_EXTENSION)
    assert world.last_modal(APPROVER2)["view"]["callback_id"] == ids.DECISION_MODAL
    blank = world.submit_reason(APPROVER2, "")
    assert json.loads(blank.body)["response_action"] == "errors"
    assert world.submit_reason(APPROVER2, "CHG-9 covers it").status == 200
    assert world.service.get_request(rid).ends_at == T0 + 150 * M
    world.deliver()
    for approver in (APPROVER, APPROVER2):
        [card] = extension_cards(world, approver, rid)  # edited in place, not posted again
        assert f"Extended* by <@{APPROVER2}>: CHG-9 covers it" in texts(card)
        assert ids.APPROVE_EXTENSION not in texts(card)
    extended = step(world, rid)
    assert "was extended" in texts(extended) and broadcast(extended)

    # a late click on the decided card is told there is nothing waiting any more
    late = world.service.extensions.refusal(rid, APPROVER)
    assert late is not None and "no extension waiting" in str(late)
    with freeze_time(T0 + 2 * H + M):
        world.tick()
        assert world.service.get_request(rid).state == "active"
        [held] = [g for g in world.log_provider.held() if g.request_id == rid]
        assert (held.grant_calls, held.revoke_calls) == (1, 0)


def test_slash_extend_sends_manual_extension_and_deny_keeps_the_window(
    world: SlackWorld,
) -> None:
    """`/jit extend ID DURATION reason…` asks; a denial is explained to the requester."""
    rid = active(world, ApprovalMode.MANUAL)
    reply = world.say(PUBLISHER, f"extend {rid} 1h need more time")
    assert "sent to the approvers" in reply
    again = world.say(PUBLISHER, f"extend {rid} 1h more")
    assert "already has an extension" in again
    world.deliver()
    [card] = extension_cards(world, APPROVER, rid)
    world.click(APPROVER, card, ids.DENY_EXTENSION)
    assert world.submit_reason(APPROVER, "not in the change window").status == 200
    world.deliver()
    denied = step(world, rid)
    latest = texts(denied)
    assert "denied" in latest and "not in the change window" in latest
    assert "still ends as before" in latest and broadcast(denied)
    assert world.service.get_request(rid).ends_at == T0 + 2 * H


def test_slash_extend_refusals_say_what_to_change(world: SlackWorld) -> None:
    """Bad input gets a usage message; the rules' refusals name the maximum."""
    rid = active(world, ApprovalMode.AUTOMATIC, hours=7)
    assert "Usage: `/jit extend ID DURATION reason…`" in world.say(PUBLISHER, f"extend {rid}")
    assert "Usage" in world.say(PUBLISHER, f"extend {rid} forever reason")
    too_long = world.say(PUBLISHER, f"extend {rid} 2h reason")
    assert "maximum of 8h" in too_long and "at most 1h can still be added" in too_long
    assert "Only the requester" in world.say(OUTSIDER, f"extend {rid} 30m reason")
    assert world.service.get_request(rid).ends_at == T0 + 7 * H


def test_reminder_has_extend_and_the_old_reminder_is_not_sent_again(
    world: SlackWorld,
) -> None:
    """The 15-minute reminder is a broadcast reply under the card that carries Extend;
    after extending, it comes before the new end."""
    rid = active(world, ApprovalMode.AUTOMATIC)
    with freeze_time(T0 + 105 * M):
        world.deliver()
        reminder = step(world, rid)
        assert "ends" in reminder["text"] and broadcast(reminder)
        card = world.requester_card(PUBLISHER, rid)
        find_button(card["blocks"], ids.EXTEND)
        world.click(PUBLISHER, card, ids.EXTEND)
        assert submit_extension(world, PUBLISHER, "30m", "almost done").status == 200
        assert world.service.get_request(rid).ends_at == T0 + 150 * M
        world.deliver()
    sent = len(world.fake.dms_to(PUBLISHER))
    with freeze_time(T0 + 2 * H + M):
        world.tick()
        assert world.service.get_request(rid).state == "active"
        assert len(world.fake.dms_to(PUBLISHER)) == sent  # no revoke, no message
    with freeze_time(T0 + 135 * M):
        world.deliver()
        assert "ends" in step(world, rid)["text"]  # the new reminder


def test_overlapping_slash_request_points_at_extend(world: SlackWorld) -> None:
    """A second overlapping request for the same role is refused with the extend command."""
    rid = active(world, ApprovalMode.AUTOMATIC)
    reply = world.say(PUBLISHER, "request crm Contributor 1h again")
    assert f"/jit extend {rid} DURATION reason" in reply
    assert len(world.service.list_requests(requester=PUBLISHER)) == 1


def test_the_sandbox_lets_a_person_extend(tmp_path: Path) -> None:
    """In the sandbox, Pat's active fabrikam-erp access has Extend; the form extends it."""
    from jitaccess_sandbox import demo
    from test_sandbox import call, eventually, open_modal, start_sandbox, state, timeline_text

    sandbox = start_sandbox(tmp_path)
    try:
        pat = demo.PUBLISHER
        call(sandbox, "command", {"user": pat, "text": "/jit request fabrikam-erp Reader 1h look"})
        eventually(lambda: "is active" in timeline_text(sandbox, pat))

        def extendable() -> dict[str, Any] | None:
            return next(
                (
                    i
                    for i in reversed(state(sandbox, pat)["timeline"])
                    if f'data-action-id="{ids.EXTEND}"' in i["html"]
                ),
                None,
            )

        card = eventually(extendable)
        status, body = call(
            sandbox,
            "click",
            {
                "user": pat,
                "source": "message",
                "channel": card["channel"],
                "ts": card["ts"],
                "block_id": "mine:1",
                "action_id": ids.EXTEND,
                "value": "1",
            },
        )
        assert body["ok"], body
        modal = open_modal(sandbox, pat, ids.EXTEND_MODAL)
        status, body = call(
            sandbox,
            "submit",
            {
                "user": pat,
                "view_id": modal["id"],
                "values": {"duration": "30m", "reason": "the import is slow"},
            },
        )
        assert body["ok"] and body["response_action"] is None, body
        eventually(lambda: "was extended" in timeline_text(sandbox, pat))
    finally:
        sandbox.stop()


def test_slash_extend_written_after_the_expiry_claimed_is_refused_and_told(
    world: SlackWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, item 1, as Pat met it: `/jit extend` one second before the end is
    acknowledged, but the work after the ack runs only once the expiry's revoke is in
    flight. The extension is refused ("ending"), Pat is told, the request expires, the
    backend hears no extend after its revoke and the audit has no extension."""
    rx = WebhookReceiver("race-secret", clock=lambda: now().timestamp()).start()
    try:
        world.service.providers.register(WebhookProvider())
        register(
            world.service,
            mode=ApprovalMode.AUTOMATIC,
            provider="webhook",
            provider_config={"url": rx.url, "secret": "race-secret"},
        )
        rid = world.service.submit(
            "crm",
            requester=PUBLISHER,
            role="Contributor",
            duration=2 * H,
            justification="rotate the keys",
            now=now(),
        ).id
        world.tick()
        assert rx.actions(rid) == ["grant"]
        held: list[Any] = []
        # The after-ack threads are busy: what follows the ack waits its turn.
        monkeypatch.setattr(AfterAck, "__call__", lambda self, work: held.append(work))
        end = T0 + 2 * H
        with freeze_time(end - timedelta(seconds=1)):
            response, key = world.command(PUBLISHER, f"extend {rid} 30m the deploy is slow")
            assert response.status == 200 and held
        ran: list[str] = []

        def late_work(point: str, body: dict[str, Any]) -> None:
            if point == "received" and body["action"] == "revoke" and not ran:
                ran.append(point)
                for work in held:
                    work()

        rx.hook = late_work
        with freeze_time(end):
            world.tick()
        assert ran, "the revoke never reached the backend"
        [reply] = world.replies(key)
        assert f"Request {rid} is ending" in reply and "submit a new request" in reply
        view = world.service.get_request(rid)
        assert (view.state, view.ends_at) == ("expired", end)
        assert rx.actions(rid) == ["grant", "revoke"]
        with world.db.transaction(readonly=True) as session:
            actions = [
                e.action for e in session.query(AuditEvent).filter(AuditEvent.request_id == rid)
            ]
        assert "extend" not in actions and actions[-1] == "expire"
    finally:
        rx.stop()
