"""Every answer from outside is read strictly (issue 16, item 2): an answer of any shape
but the documented one is a failed lookup, refused with a message, logged as one
line and counted in ``jitaccess_external_answer_rejected_total``; nothing iterates
over whatever came back.

Slack's side: the real Bolt app and WebClient against the fake Slack, which answers a
method with a given body on demand (``FakeSlack.answer_next``). Each read the app
makes of Slack is tried with every strange shape: an object, a string, null, the field
missing, a list of objects, a list of numbers, ``ok: false`` with data, ``ok`` that is
not ``true``, and a body that is not an object."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import APPROVER, APPROVER2, PUBLISHER, register
from jitaccess.answers import REJECTED
from jitaccess.app.outbox import OutboxKind
from jitaccess.domain.policy import ApprovalMode, Policy
from jitaccess.slack.blocks import ids
from jitaccess.slack.listeners.base import SORRY
from jitaccess.store.db import Database
from jitaccess.store.models import OutboxMessage, SlackMessage
from slack_harness import SlackWorld, now, texts
from test_approver_groups import GROUP, register_group_app, request, unchanged, world

__all__ = ["world"]  # the fixture, shared with test_approver_groups


def strange(field: str, good: Any) -> dict[str, Any]:
    """The strange answers to a method whose documented answer carries ``field``
    (``good`` is a well-formed value of it, for ``ok: false`` with data)."""
    return {
        "an object": {"ok": True, field: {"UOUT1": True}},
        "a string": {"ok": True, field: "UOUT1"},
        "null": {"ok": True, field: None},
        "missing": {"ok": True},
        "a list of objects": {"ok": True, field: [{"id": "UOUT1"}]},
        "a list of numbers": {"ok": True, field: [1, 2]},
        "ok false with data": {"ok": False, field: good},
        "ok not true": {"ok": "true", field: good},
        "not an object": [good],
    }


GROUP_ANSWERS = strange("users", ["UOUT1"]) | {
    "strings that are no user ids": {"ok": True, "users": ["<!channel>", "UOUT1 "]},
}


def rejected(service: str, call: str) -> float:
    return REJECTED.labels(service, call)._value.get()


# -- usergroups.users.list ------------------------------------------------------------


def test_the_issue_s_exploit_an_object_of_users_approves_nothing(
    world: SlackWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """``{"ok": true, "users": {"UOUT": true}}`` made UOUT an approver: now UOUT's
    ``/jit approve`` is refused, says what happened and what to do, and nothing is
    recorded (audit unchanged, the request still pending)."""
    register_group_app(world)
    rid = request(world)
    before = unchanged(world.db)
    counted = rejected("slack", "usergroups.users.list")
    world.fake.answer_next("usergroups.users.list", {"ok": True, "users": {"UOUT": True}})
    with caplog.at_level(logging.WARNING, logger="jitaccess.answers"):
        reply = world.say("UOUT", f"approve {rid} trust me")
    assert f"Couldn't check who is in the approver group {GROUP}" in reply
    assert "not a list of the group's members" in reply
    assert "nothing was recorded; try again" in reply
    assert unchanged(world.db) == before
    assert world.service.get_request(rid).state == "pending"
    assert rejected("slack", "usergroups.users.list") == counted + 1
    lines = [r.getMessage() for r in caplog.records if r.name == "jitaccess.answers"]
    assert len(lines) == 1 and "\n" not in lines[0] and "usergroups.users.list" in lines[0]


@pytest.mark.parametrize("shape", GROUP_ANSWERS)
def test_a_strange_group_answer_refuses_the_decision_and_records_nothing(
    world: SlackWorld, shape: str
) -> None:
    register_group_app(world)
    rid = request(world)
    before = unchanged(world.db)
    world.fake.answer_next("usergroups.users.list", GROUP_ANSWERS[shape])
    reply = world.say("UOUT1", f"approve {rid} trust me")
    assert f"Couldn't check who is in the approver group {GROUP}" in reply, reply
    assert "not a list of the group's members" in reply
    assert unchanged(world.db) == before
    assert world.service.get_request(rid).state == "pending"
    # The next, well-formed answer works as before.
    assert "approved" in world.say(APPROVER, f"approve {rid} fine")


@pytest.mark.parametrize("shape", GROUP_ANSWERS)
def test_a_strange_group_answer_refuses_the_approval_form(world: SlackWorld, shape: str) -> None:
    """The reason form of a group member: refused in the ack, nothing recorded."""
    register_group_app(world)
    rid = request(world)
    world.click(APPROVER, world.card_for(APPROVER, rid), ids.APPROVE)
    before = unchanged(world.db)
    world.fake.answer_next("usergroups.users.list", GROUP_ANSWERS[shape])
    answer = json.loads(world.submit_reason(APPROVER, "looks fine").body or "{}")
    assert answer.get("response_action") == "update", answer
    assert "Couldn't check who is in the approver group" in texts(answer["view"])
    assert "not a list of the group's members" in texts(answer["view"])
    assert unchanged(world.db) == before
    assert world.service.get_request(rid).state == "pending"


@pytest.mark.parametrize("shape", GROUP_ANSWERS)
def test_a_strange_group_answer_is_a_failed_card_delivery_retried_not_no_members(
    world: SlackWorld, shape: str
) -> None:
    """Cards are rendered from who is an approver now: a strange answer there fails the
    delivery (retried), it never takes the buttons off a member's card."""
    register_group_app(world)
    world.say(PUBLISHER, "request crm Contributor 2h rotate keys")
    counted = rejected("slack", "usergroups.users.list")
    world.fake.answer_next("usergroups.users.list", GROUP_ANSWERS[shape], times=2)
    report = world.deliver()
    assert report.failed >= 1
    assert rejected("slack", "usergroups.users.list") > counted
    assert not [m for m in world.fake.dms_to(APPROVER) if "Access request" in texts(m)]
    world.relay.drain(now() + timedelta(minutes=1))
    rid = world.service.list_requests()[0].id
    for member in (APPROVER, APPROVER2):
        assert "Approve" in texts(world.card_for(member, rid))


# -- conversations.open ---------------------------------------------------------------

DM_ANSWERS = strange("channel", {"id": "DUAPP1"}) | {
    "an id that is a number": {"ok": True, "channel": {"id": 42}},
    "an id that is no channel id": {"ok": True, "channel": {"id": "https://evil"}},
}


@pytest.mark.parametrize("shape", DM_ANSWERS)
def test_a_strange_dm_channel_answer_sends_nothing_there_and_is_retried(
    world: SlackWorld, db: Database, shape: str
) -> None:
    register_group_app(world, approvers=(APPROVER,))
    world.say(PUBLISHER, "request crm Contributor 2h rotate keys")
    counted = rejected("slack", "conversations.open")
    world.fake.answer_next("conversations.open", DM_ANSWERS[shape], times=10)
    report = world.deliver()
    assert report.failed >= 1 and report.delivered == 0
    assert rejected("slack", "conversations.open") > counted  # logged and counted
    posted = [c.args.get("channel") for c in world.fake.calls_to("chat.postMessage")]
    assert posted == []  # nothing sent to whatever came back
    for minutes in range(1, 20):  # retried (with backoff) until Slack answers well
        world.relay.drain(now() + timedelta(minutes=minutes))
    rid = world.service.list_requests()[0].id
    assert "Approve" in texts(world.card_for(APPROVER, rid))


# -- chat.postMessage -----------------------------------------------------------------

POST_ANSWERS = strange("ts", "1700000000.000100") | {
    "a ts that is a number": {"ok": True, "channel": "DUAPP1", "ts": 1700000000.0001},
    "no channel": {"ok": True, "ts": "1700000000.000100"},
}


@pytest.mark.parametrize("shape", POST_ANSWERS)
def test_a_strange_post_answer_is_not_remembered_as_the_card(
    world: SlackWorld, db: Database, shape: str
) -> None:
    """A card whose post got a strange answer is not recorded as posted (its edits would
    go to a ts Slack never gave); the delivery is retried."""
    register_group_app(world, approvers=(APPROVER,))
    world.say(PUBLISHER, "request crm Contributor 2h rotate keys")
    with db.transaction(readonly=True) as s:
        approver_cards = s.execute(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.kind == OutboxKind.APPROVER_CARD)
        ).scalar_one()
    counted = rejected("slack", "chat.postMessage")
    world.fake.answer_next("chat.postMessage", POST_ANSWERS[shape], times=10)
    report = world.deliver()
    assert report.failed >= approver_cards and report.delivered == 0
    assert rejected("slack", "chat.postMessage") > counted
    with db.transaction(readonly=True) as s:
        assert s.execute(select(func.count()).select_from(SlackMessage)).scalar_one() == 0


# -- views.open -----------------------------------------------------------------------

VIEW_ANSWERS = strange("view", {"id": "V1", "hash": "h"}) | {
    "a view without hash": {"ok": True, "view": {"id": "V1"}},
    "an id that is a number": {"ok": True, "view": {"id": 1, "hash": "h"}},
}


@pytest.mark.parametrize("shape", VIEW_ANSWERS)
def test_a_strange_views_open_answer_says_sorry_and_updates_nothing(
    world: SlackWorld, shape: str
) -> None:
    register_group_app(world, approvers=(APPROVER,))
    counted = rejected("slack", "views.open")
    world.fake.answer_next("views.open", VIEW_ANSWERS[shape])
    response, key = world.command(PUBLISHER, "request")
    assert response.status == 200
    assert world.replies(key) == [SORRY]
    assert rejected("slack", "views.open") == counted + 1
    assert world.fake.calls_to("views.update") == []


def test_rejections_are_counted_on_the_metrics_page(world: SlackWorld) -> None:
    from jitaccess.metrics import Metrics

    metrics = Metrics(world.db)
    register_group_app(world)
    rid = request(world)
    world.fake.answer_next("usergroups.users.list", GROUP_ANSWERS["an object"])
    world.say("UOUT1", f"approve {rid} trust me")
    from prometheus_client import generate_latest

    page = generate_latest(metrics.registry).decode()
    line = 'jitaccess_external_answer_rejected_total{call="usergroups.users.list",service="slack"}'
    assert line in page


# -- every decision that reads a group ------------------------------------------------

EXPLOIT = {"ok": True, "users": {"UOUT": True}}


def _active(world: SlackWorld) -> int:
    rid = request(world)
    world.say(APPROVER, f"approve {rid} ok")
    world.tick()
    assert world.service.get_request(rid).state == "active"
    return rid


@pytest.mark.parametrize("decision", ["deny", "revoke", "review", "extension", "breakglass"])
def test_every_decision_that_reads_the_group_refuses_a_strange_answer(
    world: SlackWorld, decision: str
) -> None:
    """Deny, revoke, a break-glass review, an extension's approval, and breaking glass
    as a member of a holders' group: each reads the group, and each is refused by the
    issue's answer, saying what happened, with nothing recorded."""
    from jitaccess.domain.errors import RuleViolation

    register_group_app(world)
    if decision == "deny":
        rid = request(world)
        act = f"deny {rid} no"
    elif decision == "revoke":
        rid = _active(world)
        act = f"revoke {rid} stop"
    elif decision == "review":
        world.service.set_policy("crm", actor="UADM1", now=now(), breakglass=[PUBLISHER])
        world.say(PUBLISHER, "breakglass crm Contributor 30m INC-1 database down")
        rid = world.service.list_requests()[0].id
        act = f"ack {rid} fine"
    elif decision == "breakglass":
        world.service.set_policy("crm", actor="UADM1", now=now(), breakglass=["SONCALL"])
        act = "breakglass crm Contributor 30m INC-1 database down"
    else:
        rid = _active(world)
        world.say(PUBLISHER, f"extend {rid} 30m tests still running")
        world.deliver()
    state = {r.id: (r.state, r.ends_at) for r in world.service.list_requests()}
    before = unchanged(world.db)
    world.fake.answer_next("usergroups.users.list", EXPLOIT)
    if decision == "extension":
        with pytest.raises(RuleViolation) as refused:
            world.service.extensions.approve(rid, actor="UOUT", reason="ok", now=now())
        reply = str(refused.value)
    else:
        reply = world.say(PUBLISHER if decision == "breakglass" else "UOUT", act)
    assert "not a list of the group's members" in reply, reply
    assert "try again" in reply
    assert unchanged(world.db) == before
    assert {r.id: (r.state, r.ends_at) for r in world.service.list_requests()} == state


@pytest.mark.parametrize("mode", [ApprovalMode.AUTOMATIC, ApprovalMode.MANUAL])
def test_a_submission_whose_approver_group_cannot_be_read_is_refused(
    world: SlackWorld, mode: ApprovalMode
) -> None:
    """Every approver is told of each request, automatic mode included: a request whose
    approver group Slack answers strangely is refused, and nothing is recorded (before,
    automatic mode granted it with the group's members never told)."""
    register(world.service, policy=Policy(mode=mode, approvers=(GROUP,)), now=now())
    before = unchanged(world.db)
    world.fake.answer_next("usergroups.users.list", {"ok": True, "users": {"UOUT1": True}})
    reply = world.say(PUBLISHER, "request crm Contributor 2h rotate keys")
    assert f"Couldn't check who is in the approver group {GROUP}" in reply, reply
    assert "nothing was recorded; try again" in reply
    assert unchanged(world.db) == before and world.service.list_requests() == []
    # Slack answering properly again, the same command goes through.
    assert "Request #" in world.say(PUBLISHER, "request crm Contributor 2h rotate keys")
