"""Slack end to end: the real Bolt app and WebClient against the fake Slack API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from freezegun import freeze_time

from conftest import (
    ADMIN,
    APPROVER,
    APPROVER2,
    OUTSIDER,
    PUBLISHER,
    START,
    register,
    utc,
)
from jitaccess.domain.policy import ApprovalMode
from jitaccess.slack.blocks import ids
from jitaccess.store.db import Database
from jitaccess.store.models import OutboxMessage
from jitaccess_sandbox.fake_slack import FakeSlack
from slack_harness import SlackWorld, broadcast, first_line, now, texts

T0 = utc(START)
H = timedelta(hours=1)


@pytest.fixture
def world(fake_slack: FakeSlack, db: Database) -> Iterator[SlackWorld]:
    with freeze_time(START):
        yield SlackWorld(fake_slack, db)


def request_via_modal(
    world: SlackWorld, *, start_in: timedelta | None = None, duration: str = "2h"
) -> int:
    response, _ = world.command(PUBLISHER, "request")
    assert response.status == 200
    modal = world.last_modal(PUBLISHER)
    assert modal["view"]["callback_id"] == ids.REQUEST_MODAL
    start = int((now() + start_in).timestamp()) if start_in else None
    result = world.submit_request(
        PUBLISHER,
        app="crm",
        role="Contributor",
        duration=duration,
        justification="Rotate the storage keys after INC-1234",
        start=start,
    )
    assert result.status == 200 and not result.body, result.body  # modal closed
    [request] = world.service.list_requests(requester=PUBLISHER)[:1]
    return request.id


def test_request_approve_activate_expire_with_every_message(world: SlackWorld) -> None:
    fake = world.fake
    register(world.service)
    rid = request_via_modal(world, start_in=H)
    world.deliver()

    # Every approver gets a card with what they need to decide; its times are date
    # tokens, which Slack shows in each reader's own zone (UTC where it cannot).
    for approver in (APPROVER, APPROVER2):
        card = world.card_for(approver, rid)
        shown = texts(card)
        for expected in (
            f"<@{PUBLISHER}>",
            "crm",
            "mrg-crm",
            "Contributor",
            "Rotate the storage keys after INC-1234",
            "Approvers decide",
            "Approve",
            "Deny",
            f"<!date^{int((T0 + H).timestamp())}^{{date_short_pretty}} {{time}}|2026-11-27 11:00 UTC>",
        ):
            assert expected in shown, (expected, shown)
    # Pat has one card for the request, its first line the state; the step is a
    # quiet reply in its thread (the card's own post notified).
    card = world.requester_card(PUBLISHER, rid)
    assert "Pending approval" in first_line(card)
    [sent] = world.thread(PUBLISHER, card)
    assert "sent to the approvers" in texts(sent) and not broadcast(sent)

    # Approve opens a modal that requires a reason.
    card = world.card_for(APPROVER, rid)
    assert world.click(APPROVER, card, ids.APPROVE).status == 200
    assert world.last_modal(APPROVER)["view"]["callback_id"] == ids.DECISION_MODAL
    blank = world.submit_reason(APPROVER, "   ")
    assert json.loads(blank.body)["response_action"] == "errors"
    assert world.service.get_request(rid).state == "pending"
    assert world.submit_reason(APPROVER, "Matches change CHG-77").status == 200
    assert world.service.get_request(rid).state == "approved"
    world.deliver()

    # Every approver's card now shows the outcome, who and why, and no buttons.
    for approver in (APPROVER, APPROVER2):
        card = world.card_for(approver, rid)
        shown = texts(card)
        assert "Approved" in first_line(card)
        assert f"Approved by <@{APPROVER}>: Matches change CHG-77" in shown
        assert ids.APPROVE not in shown and ids.DENY not in shown
    assert len(fake.calls_to("chat.postMessage")) > 0
    card = world.requester_card(PUBLISHER, rid)
    assert "Approved" in first_line(card)
    approved = world.thread(PUBLISHER, card)[-1]
    assert f"approved by <@{APPROVER}>: Matches change CHG-77" in texts(approved)
    assert broadcast(approved)

    with freeze_time(T0 + H):
        world.tick()
        assert world.service.get_request(rid).state == "active"
        card = world.requester_card(PUBLISHER, rid)
        assert "Active" in first_line(card) and ids.RELEASE in texts(card)
        assert "is active" in texts(world.thread(PUBLISHER, card)[-1])
    with freeze_time(T0 + 3 * H - timedelta(minutes=15)):
        world.deliver()
        reminder = world.thread(PUBLISHER, card)[-1]
        assert "ends" in reminder["text"] and broadcast(reminder)  # 15-minute reminder
    with freeze_time(T0 + 3 * H):
        world.tick()
        assert world.service.get_request(rid).state == "expired"
    # After the whole life Pat has exactly one card for it, saying Expired, with no
    # buttons left; its thread tells every step in order, those that matter broadcast.
    card = world.requester_card(PUBLISHER, rid)
    assert "Expired" in first_line(card)
    assert ids.RELEASE not in texts(card) and ids.CANCEL not in texts(card)
    steps = world.thread(PUBLISHER, card)
    told = [
        "sent to the approvers",
        "approved by",
        "is active",
        "ends",
        "expired and was revoked",
    ]
    assert len(steps) == len(told), [s["text"] for s in steps]
    for step, words in zip(steps, told, strict=True):
        assert words in step["text"], (words, step["text"])
    assert [broadcast(s) for s in steps] == [False, True, True, True, True]
    assert card["reply_count"] == len(steps)
    # What the conversation shows: the card, then each broadcast step (notified).
    conversation = fake.conversation_in(fake.dm_channel_for(PUBLISHER))
    assert [m["ts"] for m in conversation] == [card["ts"], *(s["ts"] for s in steps[1:])]
    assert world.log_provider.held() == []


def test_a_redelivered_step_posts_no_second_reply(world: SlackWorld) -> None:
    """A crash after Slack accepted a step's reply, before the outbox message was
    settled: the relay sends the message again, and nothing new appears."""
    register(world.service)
    rid = request_via_modal(world)
    world.deliver()
    world.click(APPROVER, world.card_for(APPROVER, rid), ids.APPROVE)
    world.submit_reason(APPROVER, "Matches change CHG-77")
    world.deliver()
    with world.service.db.transaction() as session:
        rows = list(session.query(OutboxMessage).filter(OutboxMessage.request_id == rid))
        for row in rows:  # as if none had been settled
            row.settled_at = None
            row.delivered_at = None
            row.available_at = now() - timedelta(seconds=1)
    posts = len(world.fake.calls_to("chat.postMessage"))
    updates = len(world.fake.calls_to("chat.update"))
    world.deliver()
    assert len(world.fake.calls_to("chat.postMessage")) == posts
    assert len(world.fake.calls_to("chat.update")) == updates
    card = world.requester_card(PUBLISHER, rid)
    assert len(world.thread(PUBLISHER, card)) == 2
    assert "Approved" in first_line(card)


def test_deny_with_a_reason_tells_the_requester(world: SlackWorld) -> None:
    register(world.service)
    rid = request_via_modal(world)
    world.deliver()
    world.click(APPROVER2, world.card_for(APPROVER2, rid), ids.DENY)
    world.submit_reason(APPROVER2, "Use the Reader role for this")
    world.deliver()
    assert world.service.get_request(rid).state == "denied"
    assert f"denied by <@{APPROVER2}>: Use the Reader role for this" in texts(
        world.fake.dms_to(PUBLISHER)[-1]
    )
    assert "Denied by" in texts(world.card_for(APPROVER, rid))


def test_automatic_mode_card_says_so_and_offers_revoke(world: SlackWorld) -> None:
    register(world.service, mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
    rid = request_via_modal(world)
    world.tick()
    assert world.service.get_request(rid).state == "active"
    card = world.card_for(APPROVER, rid)
    assert "automatic" in texts(card) and ids.REVOKE in texts(card)
    assert ids.APPROVE not in texts(card)
    world.click(APPROVER, card, ids.REVOKE)
    world.submit_reason(APPROVER, "Not needed any more")
    world.tick()
    assert world.service.get_request(rid).state == "revoked"
    assert f"revoked by <@{APPROVER}>: Not needed any more" in texts(
        world.fake.dms_to(PUBLISHER)[-1]
    )


def test_second_approver_after_a_decision_is_told_who_won(world: SlackWorld) -> None:
    register(world.service)
    rid = request_via_modal(world, start_in=H)
    world.deliver()
    stale_card = world.card_for(APPROVER2, rid)  # still has buttons on their screen
    world.click(APPROVER, world.card_for(APPROVER, rid), ids.APPROVE)
    world.submit_reason(APPROVER, "ok")
    world.click(APPROVER2, stale_card, ids.DENY)
    [ephemeral] = world.fake.ephemerals_to(APPROVER2)
    assert f"already approved by <@{APPROVER}>" in ephemeral["text"]
    assert world.service.get_request(rid).state == "approved"


def test_two_approvers_submitting_at_once_one_wins(world: SlackWorld) -> None:
    register(world.service)
    rid = request_via_modal(world, start_in=H)
    world.deliver()
    world.click(APPROVER, world.card_for(APPROVER, rid), ids.APPROVE)
    world.click(APPROVER2, world.card_for(APPROVER2, rid), ids.DENY)  # both modals open
    assert world.submit_reason(APPROVER, "yes").status == 200
    loser = world.submit_reason(APPROVER2, "no")
    assert json.loads(loser.body)["response_action"] == "update"
    assert f"already approved by <@{APPROVER}>" in world.fake.ephemerals_to(APPROVER2)[-1]["text"]
    view = world.service.get_request(rid)
    assert (view.state, view.decided_by) == ("approved", APPROVER)


def test_non_approver_and_self_approval_are_refused(world: SlackWorld) -> None:
    register(world.service, approvers=(APPROVER, PUBLISHER))
    rid = request_via_modal(world, start_in=H)
    world.deliver()
    card = world.card_for(PUBLISHER, rid)  # the publisher is also an approver
    world.click(PUBLISHER, card, ids.APPROVE)
    assert "cannot approve your own request" in world.fake.ephemerals_to(PUBLISHER)[-1]["text"]
    world.click(OUTSIDER, world.card_for(APPROVER, rid), ids.APPROVE)
    assert "you are not one" in world.fake.ephemerals_to(OUTSIDER)[-1]["text"]
    assert world.service.get_request(rid).state == "pending"


@pytest.mark.parametrize(
    ("field", "kwargs", "message"),
    [
        ("duration", {"duration": "12h"}, "maximum of 8h"),
        ("justification", {"justification": "  "}, "justification is required"),
        ("start", {"start": int((T0 - H).timestamp())}, "start time is in the past"),
    ],
)
def test_invalid_modal_input_is_shown_inline_and_creates_nothing(
    world: SlackWorld, field: str, kwargs: dict[str, object], message: str
) -> None:
    register(world.service)
    world.command(PUBLISHER, "request")
    args: dict[str, object] = {
        "app": "crm",
        "role": "Contributor",
        "duration": "2h",
        "justification": "deploy",
    }
    args.update(kwargs)
    response = world.submit_request(PUBLISHER, **args)  # type: ignore[arg-type]
    body = json.loads(response.body)
    assert body["response_action"] == "errors"
    assert message in body["errors"][field]
    assert world.service.list_requests() == []


def test_one_line_request_and_refusals_are_ephemeral(world: SlackWorld) -> None:
    register(world.service, mode=ApprovalMode.AUTOMATIC, approvers=())
    reply = world.say(PUBLISHER, "request crm Owner 1h30m hotfix for INC-9")
    assert "submitted" in reply and "Owner on crm" in reply
    assert "not an eligible role" in world.say(PUBLISHER, "request crm Janitor 1h fix")
    assert "Only crm's publishers" in world.say(OUTSIDER, "request crm Owner 1h fix")
    assert "not a duration" in world.say(PUBLISHER, "request crm Owner soon fix")
    assert "Unknown command" in world.say(PUBLISHER, "frobnicate")
    assert "/jit request" in world.say(PUBLISHER, "help")
    assert "not a request number" in world.say(PUBLISHER, "cancel abc")
    assert len(world.service.list_requests()) == 1


def test_list_pending_cancel_release_revoke_apps_commands(world: SlackWorld) -> None:
    register(world.service)
    register(world.service, "erp", mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
    first = request_via_modal(world, start_in=H)
    world.say(PUBLISHER, "request erp Owner 1h urgent fix")
    pending = world.say(APPROVER, "pending")
    assert f"#{first}" in pending and "crm" in pending
    assert f"#{first}" in world.say(PUBLISHER, "list")
    assert "cancelled" in world.say(PUBLISHER, f"cancel {first}")
    world.tick()
    [erp] = world.service.list_requests(app="erp")
    assert erp.state == "active"
    assert "approvers and consumer admins may revoke" in world.say(PUBLISHER, f"revoke {erp.id} x")
    revoked = world.say(ADMIN, f"revoke {erp.id} security review")
    assert "is now being revoked" in revoked  # recorded; the sweep carries it out
    world.tick()
    assert world.service.get_request(erp.id).state == "revoked"
    apps = world.say(ADMIN, "apps")
    assert "crm" in apps and "1 approval required from" in apps and "admin" in apps
    assert "approved automatically by the policy; approvers told:" in apps  # erp


def test_release_button_ends_access(world: SlackWorld) -> None:
    register(world.service, mode=ApprovalMode.AUTOMATIC, approvers=())
    rid = request_via_modal(world)
    world.tick()
    card = world.requester_card(PUBLISHER, rid)
    assert "Active" in first_line(card)
    world.click(PUBLISHER, card, ids.RELEASE)
    world.tick()
    view = world.service.get_request(rid)
    assert (view.state, view.ended_by) == ("revoked", PUBLISHER)


def test_config_modal_changes_the_policy_for_admins_only(world: SlackWorld) -> None:
    register(world.service)
    world.command(OUTSIDER, "config crm")
    assert "consumer admins" in texts(world.last_modal(OUTSIDER)["view"])
    world.command(ADMIN, "config crm")
    modal = world.last_modal(ADMIN)
    assert modal["view"]["callback_id"] == ids.CONFIG_MODAL
    values = {
        "mode": {"mode": {"type": "static_select", "selected_option": {"value": "manual"}}},
        "max_duration": {
            "max_duration": {"type": "static_select", "selected_option": {"value": "4h"}}
        },
        "approvers": {"approvers": {"type": "multi_users_select", "selected_users": []}},
        "approval_timeout": {
            "approval_timeout": {"type": "static_select", "selected_option": {"value": "1h"}}
        },
    }
    refused = json.loads(world.submit(ADMIN, modal, values).body)
    assert "at least one approver" in refused["errors"]["approvers"]
    values["approvers"]["approvers"]["selected_users"] = [APPROVER2]
    assert world.submit(ADMIN, modal, values).status == 200
    app = world.service.get_app("crm")
    assert (app.policy.max_duration, app.policy.approvers) == (4 * H, (APPROVER2,))


def test_app_home_for_an_approver_of_two_applications(world: SlackWorld) -> None:
    register(world.service)
    register(world.service, "erp", approvers=(APPROVER,))
    register(world.service, "hr", mode=ApprovalMode.AUTOMATIC, approvers=(APPROVER,))
    crm = request_via_modal(world, start_in=H)
    erp = world.say(PUBLISHER, "request erp Owner 1h patch")
    world.say(PUBLISHER, "request hr Contributor 1h payroll fix")
    world.tick()
    response = world.home_opened(APPROVER, "Ev001")
    assert response.status == 200
    home = texts(world.fake.current_home(APPROVER) or {})
    assert "Waiting for your approval" in home
    assert "*crm* · 1 waiting" in home and "*erp* · 1 waiting" in home
    assert f"#{crm}" in home and "Active access" in home and "hr" in home
    assert "erp" in erp
    # Approving from the home tab works like from the card.
    world.click_home(APPROVER, ids.APPROVE, crm)
    world.submit_reason(APPROVER, "from the inbox")
    assert world.service.get_request(crm).decided_by == APPROVER


def test_retried_event_is_processed_once(world: SlackWorld) -> None:
    register(world.service)
    world.home_opened(APPROVER, "Ev42")
    world.home_opened(
        APPROVER, "Ev42", **{"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"}
    )
    assert len(world.fake.calls_to("views.publish")) == 1


def test_forged_and_stale_requests_are_rejected_and_change_nothing(world: SlackWorld) -> None:
    from urllib.parse import urlencode

    from slack_harness import signed_headers

    register(world.service, mode=ApprovalMode.AUTOMATIC, approvers=())
    body = urlencode(
        {
            "command": "/jit",
            "text": "request crm Owner 1h x",
            "user_id": PUBLISHER,
            "team_id": "T0001",
            "response_url": world.fake.response_url("x"),
            "trigger_id": "t",
        }
    )
    forged = world.post(body, signed_headers(body, secret="not-the-secret"))
    stale = world.post(body, signed_headers(body, timestamp=int(T0.timestamp()) - 600))
    assert (forged.status, stale.status) == (401, 401)
    assert world.service.list_requests() == []


def test_slash_approve_after_the_approval_deadline_says_it_timed_out(world: SlackWorld) -> None:
    """/jit approve after the timeout replies that the request is now timed_out, not a generic error."""
    register(world.service)
    rid = world.service.submit(
        "crm",
        requester=PUBLISHER,
        role="Owner",
        duration=2 * H,
        justification="x",
        starts_at=T0 + 48 * H,
        now=T0,
    ).id
    with freeze_time(T0 + 25 * H):
        reply = world.say(APPROVER, f"approve {rid} looks fine")
    deadline = int((T0 + 24 * H).timestamp())
    assert (
        f"Request {rid} timed out at <!date^{deadline}^{{date_short_pretty}} {{time}}"
        "|2026-11-28 10:00 UTC> before anyone decided" in reply
    )
    assert "it is now timed out: the requester must submit a new request" in reply
    assert world.service.get_request(rid).state == "timed_out"
